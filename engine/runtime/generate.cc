#include "engine/runtime/generate.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace lensd {

CacheCollector::CacheCollector(HookSelection selection, int sequences, std::string suffix)
    : selection_(std::move(selection)), caches_(sequences), suffix_(std::move(suffix)) {}

bool CacheCollector::Wants(int seq, HookId id) const {
  (void)seq;
  return selection_.Contains(id);
}

void CacheCollector::Capture(int seq, HookId id, TensorView value) {
  Buffer copy = Buffer::Host(DType::kF32, value.shape);
  std::memcpy(copy.As<void>(), value.data, value.NumBytes());
  caches_[seq][HookName(id) + suffix_] = std::move(copy);
}

namespace {
// Borrows KV blocks for one sequence and returns them on scope exit.
class BlockLease {
 public:
  explicit BlockLease(BlockAllocator& a) : alloc_(a) {}
  ~BlockLease() { alloc_.Release(table_); }
  absl::Status Reserve(int n_tokens) {
    if (alloc_.Reserve(table_, n_tokens)) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat("KV cache too small for ", n_tokens,
                                                     " tokens (", alloc_.num_free(), " of ",
                                                     alloc_.num_blocks(), " blocks free)"));
  }
  const std::vector<int32_t>* table() const { return &table_; }

 private:
  BlockAllocator& alloc_;
  std::vector<int32_t> table_;
};
}  // namespace

absl::StatusOr<CacheResult> RunWithCache(Model& model, const std::vector<int32_t>& ids,
                                         const HookSelection& selection) {
  ASSIGN_OR_RETURN(std::vector<CacheResult> results,
                   RunWithCache(model, {ids}, selection, nullptr));
  return std::move(results[0]);
}

namespace {

// Every prompt whole as one step's batch, each on blocks borrowed through `leases`, within the
// activation budget.
absl::StatusOr<std::vector<SeqInput>> WholePrompts(
    Model& model, const std::vector<std::vector<int32_t>>& prompts, const HookSelection& selection,
    const InterventionSet* interventions, const std::vector<const AttachmentList*>& attachments,
    std::vector<std::unique_ptr<BlockLease>>& leases) {
  const ModelConfig& c = model.config();
  if (!attachments.empty() && attachments.size() != prompts.size()) {
    return absl::InvalidArgumentError("attachments must be given per prompt");
  }
  for (const AttachmentList* list : attachments) {
    if (list != nullptr) RETURN_IF_ERROR(AttachmentSites(c, *list).status());
  }
  int64_t tokens = 0;
  for (const auto& ids : prompts) tokens += static_cast<int64_t>(ids.size());
  const int64_t need = StepActivationBytes(c, tokens, selection.HasAttentionMaps() ? tokens : 0);
  if (model.activation_budget() > 0 && need > model.activation_budget()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        tokens, " tokens need about ", need >> 20, " MiB of device activations in one step; ",
        "--activation-mib allows ", model.activation_budget() >> 20));
  }
  std::vector<SeqInput> batch;
  for (size_t p = 0; p < prompts.size(); ++p) {
    leases.push_back(std::make_unique<BlockLease>(model.blocks()));
    RETURN_IF_ERROR(leases.back()->Reserve(static_cast<int>(prompts[p].size())));
    batch.push_back({prompts[p], 0, leases.back()->table(), true, interventions,
                     static_cast<int>(p), attachments.empty() ? nullptr : attachments[p]});
  }
  return batch;
}

// Each prompt's logits [1, P, V] and captured hooks.
std::vector<CacheResult> Results(const ModelConfig& c,
                                 const std::vector<std::vector<int32_t>>& prompts,
                                 const ForwardResult& fr, CacheCollector& collector) {
  std::vector<CacheResult> results(prompts.size());
  for (size_t p = 0; p < prompts.size(); ++p) {
    const int64_t P = static_cast<int64_t>(prompts[p].size());
    results[p].logits = Buffer::Host(DType::kF32, {1, P, c.vocab_size});
    std::memcpy(results[p].logits.As<float>(),
                fr.logits.As<float>() + int64_t{fr.first_row[p]} * c.vocab_size,
                results[p].logits.NumBytes());
    results[p].cache = std::move(collector.cache(static_cast<int>(p)));
  }
  return results;
}

}  // namespace

absl::StatusOr<std::vector<CacheResult>> RunWithCache(
    Model& model, const std::vector<std::vector<int32_t>>& prompts, const HookSelection& selection,
    const InterventionSet* interventions, const std::vector<const AttachmentList*>& attachments) {
  std::vector<std::unique_ptr<BlockLease>> leases;
  ASSIGN_OR_RETURN(std::vector<SeqInput> batch,
                   WholePrompts(model, prompts, selection, interventions, attachments, leases));
  CacheCollector collector(selection, static_cast<int>(prompts.size()));
  ASSIGN_OR_RETURN(ForwardResult fr, model.Forward(batch, &collector));
  return Results(model.config(), prompts, fr, collector);
}

absl::StatusOr<std::vector<CacheResult>> RunWithGradients(
    Model& model, const std::vector<std::vector<int32_t>>& prompts, const HookSelection& selection,
    const Objective& objective, const InterventionSet* interventions,
    const std::vector<const AttachmentList*>& attachments) {
  std::vector<std::unique_ptr<BlockLease>> leases;
  ASSIGN_OR_RETURN(std::vector<SeqInput> batch,
                   WholePrompts(model, prompts, selection, interventions, attachments, leases));
  RETURN_IF_ERROR(CheckObjective(model.config(), objective));
  const int n = static_cast<int>(prompts.size());
  CacheCollector collector(selection, n), gradients(selection, n, "_grad");
  HookDotTap tap(objective, &collector, n);
  const bool hook_dot = objective.kind == Objective::Kind::kHookDot;
  std::vector<int> lengths;
  for (const auto& ids : prompts) lengths.push_back(static_cast<int>(ids.size()));
  const HookSeed seed = HookDotSeed(objective, lengths);
  std::vector<double> values(prompts.size());
  const int vocab = model.config().vocab_size;
  auto dlogits = [&](int s, TensorView logits, float* grad) -> absl::Status {
    ASSIGN_OR_RETURN(values[s],
                     ObjectiveAndGradient(objective, logits.As<float>(), prompts[s], vocab, grad));
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(ForwardResult fr, model.ForwardBackward(batch, &tap, dlogits, &gradients,
                                                           hook_dot ? &seed : nullptr));
  std::vector<CacheResult> results = Results(model.config(), prompts, fr, collector);
  for (int p = 0; p < n; ++p) {
    results[p].cache.merge(gradients.cache(p));
    results[p].objective = hook_dot ? tap.value(p) : values[p];
  }
  return results;
}

bool IsStopToken(const ModelConfig& config, const SamplingParams& params, int32_t token) {
  if (std::find(params.stop_ids.begin(), params.stop_ids.end(), token) != params.stop_ids.end()) {
    return true;
  }
  return !params.ignore_eos &&
         std::find(config.eos_ids.begin(), config.eos_ids.end(), token) != config.eos_ids.end();
}

std::optional<FinishReason> FinishAfter(const ModelConfig& config, const SamplingParams& params,
                                        int32_t token, int generated, int length) {
  if (IsStopToken(config, params, token)) return FinishReason::kStop;
  if (generated >= params.max_new_tokens) return FinishReason::kLength;
  if (length >= config.max_positions) return FinishReason::kContext;
  return std::nullopt;
}

absl::StatusOr<GenerateResult> Generate(Model& model, const std::vector<int32_t>& prompt,
                                        const SamplingParams& params,
                                        const std::function<void(int32_t)>& on_token,
                                        const InterventionSet* interventions,
                                        const AttachmentList* attachments) {
  RETURN_IF_ERROR(ValidateSampling(params));
  const ModelConfig& c = model.config();
  const int P = static_cast<int>(prompt.size());
  BlockLease lease(model.blocks());
  const int total = std::min(P + params.max_new_tokens, c.max_positions);
  RETURN_IF_ERROR(lease.Reserve(std::max(total, P)));
  Sampler sampler(params);
  GenerateResult result;
  if (params.max_new_tokens == 0) return result;
  std::vector<int> prompt_ints(prompt.begin(), prompt.end()), out_ints;
  std::vector<SeqInput> batch = {{prompt, 0, lease.table(), false, interventions, 0, attachments}};
  const int rope_switch = RopeSwitch(c);
  while (true) {
    ASSIGN_OR_RETURN(ForwardResult fr, model.Forward(batch, nullptr));
    const int32_t next = sampler.Sample(fr.logits.As<float>(), c.vocab_size, prompt_ints, out_ints);
    result.tokens.push_back(next);
    out_ints.push_back(next);
    if (on_token) on_token(next);
    const int n = static_cast<int>(result.tokens.size());
    if (std::optional<FinishReason> why = FinishAfter(c, params, next, n, P + n)) {
      result.finish = *why;
      break;
    }
    batch[0].start_pos += static_cast<int>(batch[0].tokens.size());
    batch[0].tokens = {next};
    if (batch[0].start_pos == rope_switch) {    // longrope's long frequencies from here on:
      batch[0].tokens = prompt;                 // recompute every position with them
      batch[0].tokens.insert(batch[0].tokens.end(), result.tokens.begin(), result.tokens.end());
      batch[0].start_pos = 0;
    }
  }
  return result;
}

}  // namespace lensd
