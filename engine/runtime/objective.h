// What a gradient is taken of (DESIGN.md "Gradients"): a scalar of one prompt's logits, with
// its gradient with respect to those logits. The row metrics are the PatchSweep's too, so a
// sweep's metric and an attribution's objective are the same function.
#ifndef LENSD_ENGINE_RUNTIME_OBJECTIVE_H_
#define LENSD_ENGINE_RUNTIME_OBJECTIVE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/runtime/hooks.h"

namespace lensd {

// mean(l[answer]) − mean(l[wrong]) of one row of logits; adds its gradient times `weight`
// to `grad` (null: none).
double LogitDiffRow(const float* l, const std::vector<int>& answer, const std::vector<int>& wrong,
                    double weight, float* grad);
// log Σ_{i ∈ ids} softmax(l)_i over `vocab` logits (ids not empty); adds its gradient times
// `weight` to `grad` (null: none).
double LogProbRow(const float* l, const std::vector<int>& ids, int vocab, double weight,
                  float* grad);

// log Σ_v exp(l[v]) over a row of `vocab` logits, in double.
double LogSumExpRow(const float* l, int vocab);

struct Objective {
  enum class Kind {
    kLoss,       // mean next-token cross-entropy over positions 0..P−2 (TransformerLens's loss)
    kLogitDiff,  // LogitDiffRow(answer, wrong), averaged over `positions`
    kLogProb,    // LogProbRow(answer), averaged over `positions`
    kHookDot,  // ⟨value of `hook`, direction⟩ (flattened per position), averaged over `positions`
  };
  Kind kind = Kind::kLoss;
  std::vector<int> answer, wrong;
  std::vector<int> positions;  // negative count from the end; empty: the last position
  HookId hook{HookPoint::kResidPost, 0};  // kHookDot
  std::vector<float> direction;           // kHookDot: the hook's width per position
};

// Whether `o` can be taken on this model: kHookDot needs a hook the backward walk seeds
// (residual, attention head, MLP hooks and unembed.hook_in) and a direction of its width.
// INVALID_ARGUMENT naming "objective.hook_dot.<field>" otherwise.
absl::Status CheckObjective(const ModelConfig& c, const Objective& o);

// kHookDot: its gradient with respect to its hook for sequences of `lengths` tokens (rows
// [n, width]: direction / |positions| at its positions, 0 elsewhere), what the backward walk
// seeds; and its value from the hook's rows [n, width].
HookSeed HookDotSeed(const Objective& o, const std::vector<int>& lengths);
double HookDotValue(const Objective& o, const float* rows, int n);

// A sink that forwards to `inner` (may be null) and, for a kHookDot objective, keeps per
// sequence the objective's value from its hook's rows (other kinds: it only forwards).
class HookDotTap : public HookSink {
 public:
  HookDotTap(const Objective& o, HookSink* inner, int sequences)
      : o_(o), inner_(inner), values_(static_cast<size_t>(sequences), 0.0) {}
  bool Wants(int seq, HookId id) const override {
    return Reads(id) || (inner_ != nullptr && inner_->Wants(seq, id));
  }
  void Capture(int seq, HookId id, TensorView value) override;
  double value(int seq) const { return values_[static_cast<size_t>(seq)]; }

 private:
  bool Reads(HookId id) const { return o_.kind == Objective::Kind::kHookDot && id == o_.hook; }
  const Objective& o_;
  HookSink* inner_;
  std::vector<double> values_;
};

// The objective of one prompt's logits [P, vocab] (its token ids `ids`), and its gradient
// with respect to them into `grad` [P, vocab] (overwritten). INVALID_ARGUMENT for positions
// outside the prompt or a loss of a one-token prompt. kHookDot does not read the logits: its
// gradient there is 0 and its value 0 (HookDotTap has the value).
absl::StatusOr<double> ObjectiveAndGradient(const Objective& o, const float* logits,
                                            const std::vector<int32_t>& ids, int vocab,
                                            float* grad);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_OBJECTIVE_H_
