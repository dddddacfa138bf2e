// Model::ForwardBackward: the forward pass saving each layer's input residual, then the
// backward walk (blocks_backward.h), each layer recomputed from its saved input into a
// LayerTape just before its backward.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/runtime/blocks_backward.h"
#include "engine/runtime/memory_plan.h"
#include "engine/runtime/model_internal.h"

namespace lensd {

absl::Status Model::GradientSupport() const {
  if (shards_.size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "gradients run on one device for now; this model is split over ", shards_.size()));
  }
  const Shard& shard = *shards_[0];
  if (shard.backend->gradients() == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ", shard.backend->Name(), " backend computes no gradients yet (the CPU one does)"));
  }
  if (shard.layers.offloaded() > 0) {
    return absl::FailedPreconditionError(
        "gradients need every layer resident (no --offload-layers)");
  }
  return absl::OkStatus();
}

absl::Status Model::CheckGradients(const std::vector<SeqInput>& batch,
                                   const HookSink* grads) const {
  RETURN_IF_ERROR(GradientSupport());
  int64_t tokens = 0, map_tokens = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t n = static_cast<int64_t>(batch[s].tokens.size());
    tokens += n;
    for (int l = 0; l < config_.n_layers && grads != nullptr; ++l) {
      const int seq = static_cast<int>(s);
      if (grads->Wants(seq, {HookPoint::kAttnScores, l}) ||
          grads->Wants(seq, {HookPoint::kPattern, l})) {
        map_tokens += n;
        break;
      }
    }
  }
  const int64_t need = GradientStepBytes(config_, tokens, map_tokens);
  if (need > gradient_budget_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "gradients of ", tokens, " tokens", map_tokens > 0 ? " (with attention-map gradients)" : "",
        " need about ", need >> 20, " MiB beyond the forward pass; this server allows ",
        gradient_budget_ >> 20, " MiB (--gradient-mib)"));
  }
  for (const SeqInput& in : batch) {
    if (in.start_pos != 0 || !in.all_logits) {
      return absl::InvalidArgumentError("gradients take whole prompts with every row's logits");
    }
    if (in.attachments != nullptr) RETURN_IF_ERROR(CheckAttachmentGradients(*in.attachments));
    if (in.interventions != nullptr) {
      RETURN_IF_ERROR(in.interventions->CheckGradientRules());
    }
  }
  return absl::OkStatus();
}

// The objective's gradient with respect to every row's logits, on the device.
absl::StatusOr<Buffer> Model::LogitsGradientOf(const std::vector<SeqInput>& batch,
                                               const ForwardResult& result,
                                               const LogitsGradient& objective) {
  Backend& b = *shards_[0]->backend;
  const int64_t V = config_.vocab_size, rows = result.logits.shape()[0];
  Buffer host = Buffer::Host(DType::kF32, {rows, V});
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t first = result.first_row[s], n = static_cast<int64_t>(batch[s].tokens.size());
    RETURN_IF_ERROR(objective(static_cast<int>(s), result.logits.view().Rows(first, first + n),
                              host.As<float>() + first * V));
  }
  Buffer device = AllocateInStep(b, DType::kF32, {rows, V});
  b.Upload(host.As<float>(), device.view());
  return device;
}

void Model::Backward(const std::vector<SeqInput>& batch, HookSink* grads, const HookSeed* seed,
                     const ForwardResult& result, Buffer dlogits, TensorView x,
                     std::vector<Buffer>& inputs) {
  Shard& shard = *shards_[0];
  Backend& b = *shard.backend;
  const int bs = blocks_->block_size();
  StepPlan plan = BuildStepPlan(batch, grads, bs);
  plan.seed = seed;
  Step back;
  back.plan = &plan;
  RankContext g = ContextFor(back, shard);
  // The returned logits on the device only where the final softcap's slope needs them.
  Buffer logits;
  if (config_.final_softcap > 0.0f) {
    logits = AllocateInStep(b, DType::kF32, result.logits.shape());
    b.Upload(result.logits.As<float>(), logits.view());
  }
  Buffer dx = HeadBackward(g, shard.head, x, logits.view(), dlogits.view());
  dlogits = Buffer();
  for (int l = config_.n_layers - 1; l >= 0; --l) {
    // The layer recomputed from its input, its activations captured into its tape.
    LayerTape tape(b, plan, l);
    const StepPlan tape_plan = BuildStepPlan(batch, &tape, bs);
    Step recompute;
    recompute.plan = &tape_plan;
    RankContext t = ContextFor(recompute, shard);
    Buffer y = AllocateInStep(b, DType::kF32, inputs[l].shape());
    b.Copy(inputs[l].view(), y.view());
    const LayerInputs in = InputsOf(shard, l);
    BlockForward(t, in, y.view());
    FlushCaptures();
    back.scratch.Clear();
    BlockBackward(g, in, tape, dx.view());
    inputs[l] = Buffer();
  }
  EmbedBackward(g, dx.view());
}

absl::StatusOr<ForwardResult> Model::ForwardBackward(const std::vector<SeqInput>& batch,
                                                     HookSink* hooks,
                                                     const LogitsGradient& objective,
                                                     HookSink* grads, const HookSeed* seed) {
  RETURN_IF_ERROR(Validate(batch));
  RETURN_IF_ERROR(CheckGradients(batch, grads));
  Backend& b = *shards_[0]->backend;
  // The forward pass (one device: embedding, blocks, head), keeping each layer's input.
  const StepPlan plan = BuildStepPlan(batch, hooks, blocks_->block_size());
  std::vector<Buffer> inputs(static_cast<size_t>(config_.n_layers));
  Step step;
  step.plan = &plan;
  step.inputs = &inputs;
  RunRank(step);
  FlushCaptures();
  RETURN_IF_ERROR(b.TakeError());
  ASSIGN_OR_RETURN(Buffer dlogits, LogitsGradientOf(batch, step.result, objective));
  Backward(batch, grads, seed, step.result, std::move(dlogits), step.x.view(), inputs);
  FlushCaptures();
  RETURN_IF_ERROR(b.TakeError());
  return std::move(step.result);
}

}  // namespace lensd
