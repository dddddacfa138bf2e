// What a gradient is taken of (DESIGN.md "Gradients"): a scalar of one prompt's logits, with
// its gradient with respect to those logits. The row metrics are the PatchSweep's too, so a
// sweep's metric and an attribution's objective are the same function.
#ifndef LENSD_ENGINE_RUNTIME_OBJECTIVE_H_
#define LENSD_ENGINE_RUNTIME_OBJECTIVE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

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
  };
  Kind kind = Kind::kLoss;
  std::vector<int> answer, wrong;
  std::vector<int> positions;  // negative count from the end; empty: the last position
};

// The objective of one prompt's logits [P, vocab] (its token ids `ids`), and its gradient
// with respect to them into `grad` [P, vocab] (overwritten). INVALID_ARGUMENT for positions
// outside the prompt or a loss of a one-token prompt.
absl::StatusOr<double> ObjectiveAndGradient(const Objective& o, const float* logits,
                                            const std::vector<int32_t>& ids, int vocab,
                                            float* grad);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_OBJECTIVE_H_
