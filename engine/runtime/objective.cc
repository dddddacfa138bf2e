#include "engine/runtime/objective.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

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

// The objective's positions in a prompt of `n` tokens (empty: the last).
absl::StatusOr<std::vector<int>> Positions(const Objective& o, int n) {
  std::vector<int> positions = o.positions.empty() ? std::vector<int>{n - 1} : o.positions;
  for (int& p : positions) {
    const int given = p;
    if (p < 0) p += n;
    if (p < 0 || p >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("objective position ", given, " is outside a prompt of ", n, " tokens"));
    }
  }
  return positions;
}

}  // namespace

absl::Status CheckObjective(const ModelConfig& c, const Objective& o) {
  if (o.kind != Objective::Kind::kHookDot) return absl::OkStatus();
  const HookPoint p = o.hook.point;
  const bool seeded = HasGradientRule(p) && p != HookPoint::kEmbed && p != HookPoint::kPosEmbed &&
                      p != HookPoint::kUnembedOut && !o.hook.attached();
  if (!seeded) {
    return absl::InvalidArgumentError(
        absl::StrCat("objective.hook_dot.hook: ", HookName(o.hook),
                     " cannot carry the objective; use a "
                     "residual, attention head (q, k, v, z), MLP hook or unembed.hook_in"));
  }
  const int64_t width = PositionWidth(c, p);
  if (static_cast<int64_t>(o.direction.size()) != width) {
    return absl::InvalidArgumentError(absl::StrCat("objective.hook_dot.direction has ",
                                                   o.direction.size(), " elements; ",
                                                   HookName(o.hook), " has ", width));
  }
  for (float x : o.direction) {
    if (!std::isfinite(x)) {
      return absl::InvalidArgumentError("objective.hook_dot.direction has non-finite values");
    }
  }
  return absl::OkStatus();
}

HookSeed HookDotSeed(const Objective& o, const std::vector<int>& lengths) {
  HookSeed seed{o.hook, {}};
  const int64_t w = static_cast<int64_t>(o.direction.size());
  for (int n : lengths) {
    std::vector<float>& rows = seed.rows.emplace_back(static_cast<size_t>(n * w), 0.0f);
    const absl::StatusOr<std::vector<int>> positions = Positions(o, n);  // checked at the edge
    if (!positions.ok()) continue;
    const float scale = 1.0f / static_cast<float>(positions->size());
    for (int p : *positions) {
      for (int64_t i = 0; i < w; ++i) rows[p * w + i] += scale * o.direction[i];
    }
  }
  return seed;
}

double HookDotValue(const Objective& o, const float* rows, int n) {
  const int64_t w = static_cast<int64_t>(o.direction.size());
  const absl::StatusOr<std::vector<int>> positions = Positions(o, n);
  if (!positions.ok()) return 0.0;
  double sum = 0;
  for (int p : *positions) {
    for (int64_t i = 0; i < w; ++i) sum += double{rows[p * w + i]} * o.direction[i];
  }
  return sum / static_cast<double>(positions->size());
}

void HookDotTap::Capture(int seq, HookId id, TensorView value) {
  if (Reads(id)) {
    const int n = static_cast<int>(value.NumElements() / static_cast<int64_t>(o_.direction.size()));
    values_[static_cast<size_t>(seq)] = HookDotValue(o_, value.As<float>(), n);
  }
  if (inner_ != nullptr && inner_->Wants(seq, id)) inner_->Capture(seq, id, value);
}

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
  if (o.kind == Objective::Kind::kHookDot) return 0.0;
  ASSIGN_OR_RETURN(const std::vector<int> positions, Positions(o, P));
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
