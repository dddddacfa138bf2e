// Offline single-request paths over a Model: run_with_cache and generation. The server's
// scheduler batches the same Model::Forward calls; these are the reference semantics.
#ifndef LENSD_ENGINE_RUNTIME_GENERATE_H_
#define LENSD_ENGINE_RUNTIME_GENERATE_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/cache_result.h"
#include "engine/runtime/hooks.h"
#include "engine/runtime/interventions.h"
#include "engine/runtime/model.h"
#include "engine/runtime/objective.h"
#include "engine/runtime/sampler.h"

namespace lensd {

// Collects selected hooks of each sequence (whole in one step) into host float32 tensors with
// TransformerLens shapes (batch dim 1).
class CacheCollector : public HookSink {
 public:
  // Tensors are kept under their hook's name plus `suffix` ("_grad" for gradients).
  CacheCollector(HookSelection selection, int sequences, std::string suffix = "");
  bool Wants(int seq, HookId id) const override;
  bool WantsAny(int seq) const override { return !selection_.empty(); }
  void Capture(int seq, HookId id, TensorView value) override;
  std::map<std::string, Buffer>& cache(int seq) { return caches_[seq]; }

 private:
  HookSelection selection_;
  std::vector<std::map<std::string, Buffer>> caches_;
  std::string suffix_;
};

// One full forward pass over `ids` (blocks are borrowed and returned).
absl::StatusOr<CacheResult> RunWithCache(Model& model, const std::vector<int32_t>& ids,
                                         const HookSelection& selection);
// Every prompt whole, all in one forward pass, with `interventions` (null: none; validated
// for these prompts) applied; per prompt its selected hooks (after the ops) and logits.
// `attachments`: empty, or per prompt its list (null: none); the selection may name their
// hooks (HookSelection's sites).
absl::StatusOr<std::vector<CacheResult>> RunWithCache(
    Model& model, const std::vector<std::vector<int32_t>>& prompts, const HookSelection& selection,
    const InterventionSet* interventions,
    const std::vector<const AttachmentList*>& attachments = {});

// RunWithCache with gradients (Model::ForwardBackward): per prompt its selected hooks N, and
// N_grad — the gradient of its objective with respect to the value N passes downstream —
// under "N_grad"; its logits; the objective's value. Through `interventions` (null: none)
// by their gradient rules (InterventionSet::CheckGradientRules), and `attachments` (as
// RunWithCache's) by theirs (HookAttachment::Backward).
absl::StatusOr<std::vector<CacheResult>> RunWithGradients(
    Model& model, const std::vector<std::vector<int32_t>>& prompts, const HookSelection& selection,
    const Objective& objective, const InterventionSet* interventions = nullptr,
    const std::vector<const AttachmentList*>& attachments = {});

enum class FinishReason {
  kLength,   // max_new_tokens generated
  kStop,     // an EOS or stop token was generated (it is included)
  kContext,  // the sequence filled the model's context (max_positions tokens)
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens only
  FinishReason finish = FinishReason::kLength;
};

// Prefill then cached decode. `on_token` (optional) sees each token as it is produced.
// `interventions` (null: none) and `attachments` (null: none) apply at every step, prompt and
// new tokens alike.
absl::StatusOr<GenerateResult> Generate(Model& model, const std::vector<int32_t>& prompt,
                                        const SamplingParams& params,
                                        const std::function<void(int32_t)>& on_token = nullptr,
                                        const InterventionSet* interventions = nullptr,
                                        const AttachmentList* attachments = nullptr);

// True when `token` ends generation under `params` for `config`.
bool IsStopToken(const ModelConfig& config, const SamplingParams& params, int32_t token);

// The stop rule, the one place offline generation and the scheduler ask: after `token`, the
// `generated`-th new token of a sequence now `length` tokens long (prompt included), why
// generation ends, or nullopt when it goes on. A stop token wins, then max_new_tokens, then
// the context.
std::optional<FinishReason> FinishAfter(const ModelConfig& config, const SamplingParams& params,
                                        int32_t token, int generated, int length);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_GENERATE_H_
