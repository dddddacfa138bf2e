#include "engine/runtime/objective.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace lensd {
namespace {

// log Σ exp(l[i]) over i in `ids`, or over the whole row (`ids` null), in double.
double LogSumExp(const float* l, const std::vector<int>* ids, int vocab) {
  const int n = ids != nullptr ? static_cast<int>(ids->size()) : vocab;
  auto at = [&](int k) -> double { return l[ids != nullptr ? (*ids)[k] : k]; };
  double max = -INFINITY, sum = 0;
  for (int k = 0; k < n; ++k) max = std::max(max, at(k));
  for (int k = 0; k < n; ++k) sum += std::exp(at(k) - max);
  return max + std::log(sum);
}

}  // namespace

double LogSumExpRow(const float* l, int vocab) { return LogSumExp(l, nullptr, vocab); }

double LogitDiffRow(const float* l, const std::vector<int>& answer, const std::vector<int>& wrong,
                    double weight, float* grad) {
  double a = 0, w = 0;
  for (int id : answer) a += l[id];
  for (int id : wrong) w += l[id];
  if (grad != nullptr) {
    for (int id : answer) grad[id] += static_cast<float>(weight / answer.size());
    for (int id : wrong) grad[id] -= static_cast<float>(weight / wrong.size());
  }
  return a / static_cast<double>(answer.size()) - w / static_cast<double>(wrong.size());
}

double LogProbRow(const float* l, const std::vector<int>& ids, int vocab, double weight,
                  float* grad) {
  const double z = LogSumExp(l, nullptr, vocab), zi = LogSumExp(l, &ids, vocab);
  if (grad != nullptr) {
    // d/dl_v = [v ∈ ids] softmax restricted to ids − softmax over the row.
    for (int v = 0; v < vocab; ++v) grad[v] -= static_cast<float>(weight * std::exp(l[v] - z));
    for (int id : ids) grad[id] += static_cast<float>(weight * std::exp(l[id] - zi));
  }
  return zi - z;
}

absl::StatusOr<double> ObjectiveAndGradient(const Objective& o, const float* logits,
                                            const std::vector<int32_t>& ids, int vocab,
                                            float* grad) {
  const int P = static_cast<int>(ids.size());
  std::fill(grad, grad + int64_t{P} * vocab, 0.0f);
  if (o.kind == Objective::Kind::kLoss) {
    if (P < 2) return absl::InvalidArgumentError("the loss needs a prompt of at least 2 tokens");
    double sum = 0;
    const double weight = -1.0 / (P - 1);  // mean of −log p(next token)
    for (int i = 0; i + 1 < P; ++i) {
      const float* row = logits + int64_t{i} * vocab;
      sum += LogProbRow(row, {ids[i + 1]}, vocab, weight, grad + int64_t{i} * vocab);
    }
    return -sum / (P - 1);
  }
  std::vector<int> positions = o.positions.empty() ? std::vector<int>{P - 1} : o.positions;
  for (int& p : positions) {
    const int given = p;
    if (p < 0) p += P;
    if (p < 0 || p >= P) {
      return absl::InvalidArgumentError(
          absl::StrCat("objective position ", given, " is outside a prompt of ", P, " tokens"));
    }
  }
  const double weight = 1.0 / static_cast<double>(positions.size());
  double sum = 0;
  for (int p : positions) {
    const float* row = logits + int64_t{p} * vocab;
    float* g = grad + int64_t{p} * vocab;
    sum += o.kind == Objective::Kind::kLogitDiff ? LogitDiffRow(row, o.answer, o.wrong, weight, g)
                                                 : LogProbRow(row, o.answer, vocab, weight, g);
  }
  return sum * weight;
}

}  // namespace lensd
