// Model::ForwardBackward: the forward pass saving each layer's input residual, then the
// backward walk (blocks_backward.h), each layer recomputed from its saved input into a
// LayerTape just before its backward.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/runtime/blocks_backward.h"
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
  for (const LayerSpec& spec : config_.layers) {
    if (spec.mlp == MlpKind::kMoe) {
      return absl::FailedPreconditionError(
          "gradients through mixtures of experts are not supported yet");
    }
  }
  return absl::OkStatus();
}

absl::Status Model::CheckGradients(const std::vector<SeqInput>& batch) const {
  RETURN_IF_ERROR(GradientSupport());
  for (const SeqInput& in : batch) {
    if (in.start_pos != 0 || !in.all_logits) {
      return absl::InvalidArgumentError("gradients take whole prompts with every row's logits");
    }
    if (in.interventions != nullptr || (in.attachments != nullptr && !in.attachments->empty())) {
      return absl::InvalidArgumentError(
          "gradients through interventions or attachments are not supported yet");
    }
  }
  return absl::OkStatus();
}

LayerInputs Model::InputsOf(int layer) {
  Shard& shard = *shards_[0];
  return {.layer = layer,
          .w = shard.layers.Get(layer, *shard.backend),
          .inv_freq = config_.learned_positions ? TensorView{} : shard.inv_freq[layer].view(),
          .kv = {shard.k_pool[layer].view(), shard.v_pool[layer].view(), blocks_->block_size()}};
}

absl::StatusOr<ForwardResult> Model::ForwardBackward(const std::vector<SeqInput>& batch,
                                                     HookSink* hooks,
                                                     const LogitsGradient& objective,
                                                     HookSink* grads) {
  RETURN_IF_ERROR(Validate(batch));
  RETURN_IF_ERROR(CheckGradients(batch));
  Shard& shard = *shards_[0];
  Backend& b = *shard.backend;
  const int bs = blocks_->block_size();
  const int64_t D = config_.d_model, V = config_.vocab_size;
  // Forward, keeping each layer's input.
  const StepPlan plan = BuildStepPlan(batch, hooks, bs);
  Step step;
  step.plan = &plan;
  RankContext c = ContextFor(step, shard);
  shard.layers.BeginPass(b);
  step.x = EmbedForward(c, shard.embed);
  std::vector<Buffer> inputs(static_cast<size_t>(config_.n_layers));
  for (int l = 0; l < config_.n_layers; ++l) {
    step.scratch.Clear();
    inputs[l] = AllocateInStep(b, DType::kF32, {plan.tokens, D});
    b.Copy(step.x.view(), inputs[l].view());
    BlockForward(c, InputsOf(l), step.x.view());
  }
  step.scratch.Clear();
  ForwardResult result = HeadForward(c, shard.head, step.x.view());
  FlushCaptures();
  RETURN_IF_ERROR(b.TakeError());
  // The objective's gradient with respect to every row's logits.
  Buffer dlogits_host = Buffer::Host(DType::kF32, {plan.tokens, V});
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t first = result.first_row[s], n = static_cast<int64_t>(batch[s].tokens.size());
    RETURN_IF_ERROR(objective(static_cast<int>(s), result.logits.view().Rows(first, first + n),
                              dlogits_host.As<float>() + first * V));
  }
  // Backward: the head, then each layer recomputed into its tape and walked back.
  const StepPlan grad_plan = BuildStepPlan(batch, grads, bs);
  Step back;
  back.plan = &grad_plan;
  RankContext g = ContextFor(back, shard);
  // The returned logits on the device only where the final softcap's slope needs them.
  Buffer logits;
  if (config_.final_softcap > 0.0f) {
    logits = AllocateInStep(b, DType::kF32, {plan.tokens, V});
    b.Upload(result.logits.As<float>(), logits.view());
  }
  Buffer dlogits = AllocateInStep(b, DType::kF32, {plan.tokens, V});
  b.Upload(dlogits_host.As<float>(), dlogits.view());
  dlogits_host = Buffer();
  Buffer dx = HeadBackward(g, shard.head, step.x.view(), logits.view(), dlogits.view());
  for (int l = config_.n_layers - 1; l >= 0; --l) {
    LayerTape tape(b, plan, l);
    const StepPlan tape_plan = BuildStepPlan(batch, &tape, bs);
    Step recompute;
    recompute.plan = &tape_plan;
    RankContext t = ContextFor(recompute, shard);
    Buffer x = AllocateInStep(b, DType::kF32, {plan.tokens, D});
    b.Copy(inputs[l].view(), x.view());
    BlockForward(t, InputsOf(l), x.view());
    FlushCaptures();
    back.scratch.Clear();
    BlockBackward(g, InputsOf(l), tape, inputs[l].view(), dx.view());
    inputs[l] = Buffer();
  }
  EmbedBackward(g, dx.view());
  FlushCaptures();
  RETURN_IF_ERROR(b.TakeError());
  return result;
}

}  // namespace lensd
