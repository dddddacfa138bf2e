// Memory planning: what weights, KV cache and activations take on each device.
#include "engine/runtime/memory_plan.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/runtime/tensor_parallel.h"

namespace lensd {

int64_t StepActivationBytes(const ModelConfig& c, int64_t tokens, int64_t map_tokens) {
  const int64_t D = c.d_model, q = int64_t{c.n_heads} * c.d_head;
  const int64_t kv = int64_t{c.n_kv_heads} * c.d_head, M = c.d_mlp;
  const int64_t block = tokens * (8 * D + 2 * (2 * q + 2 * kv) + 2 * 3 * M) +
                        2 * int64_t{c.n_heads} * map_tokens * map_tokens;
  const int64_t head = tokens * (2 * D + c.vocab_size);
  return 4 * std::max(block, head);
}

int64_t GradientStepBytes(const ModelConfig& c, int64_t tokens, int64_t map_tokens) {
  const int64_t inputs = int64_t{c.n_layers + 1} * tokens * c.d_model;
  const int64_t dlogits = 2 * tokens * c.vocab_size;
  return 4 * (inputs + dlogits) + 2 * StepActivationBytes(c, tokens, map_tokens);
}

int64_t StageWeightBytes(const ModelConfig& c, DType dtype, int tp, std::pair<int, int> layers,
                         int first_offloaded, bool first_stage, bool last_stage) {
  const int64_t D = c.d_model, q = int64_t{c.n_heads} * c.d_head,
                kv = int64_t{c.n_kv_heads} * c.d_head;
  const int64_t m = DTypeSize(dtype);  // matrices; vectors are float32
  auto layer_bytes = [&](int l) {
    const LayerSpec& s = c.layers[l];
    // A mixture: every expert's three matrices and the router.
    const int64_t mlp = s.mlp == MlpKind::kMoe
                            ? int64_t{s.moe.experts} * (3 * D * s.moe.d_expert + D)
                            : (s.mlp == MlpKind::kGated ? 3 : 2) * D * c.d_mlp;
    return (m * (2 * D * q + 2 * D * kv + mlp) + 4 * 4 * D) / tp;
  };
  const auto [a, b] = layers;
  const int resident_end = std::max(a, std::min(b, first_offloaded));
  int64_t bytes = 0, slot = 0;  // offloaded layers stream through two slots
  for (int l = a; l < resident_end; ++l) bytes += layer_bytes(l);
  for (int l = resident_end; l < b; ++l) slot = std::max(slot, layer_bytes(l));
  return bytes + 2 * slot +
         (first_stage ? m * D * (c.vocab_size + (c.learned_positions ? c.max_positions : 0)) : 0) +
         (last_stage ? m * D * c.vocab_size : 0);
}

absl::StatusOr<int> KvTokensForBudget(const ModelConfig& c, DType dtype, int tp,
                                      const std::vector<std::pair<int, int>>& ranges,
                                      const std::vector<int64_t>& budget, int offloaded,
                                      int block_size, std::optional<DType> kv_dtype) {
  if (budget.size() != ranges.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(budget.size(), " memory budgets for ", ranges.size(), " pipeline stages"));
  }
  const int64_t per_token_layer =
      int64_t{2} * KvHeadsPerRank(c, tp) * c.d_head *
      static_cast<int64_t>(DTypeSize(kv_dtype.value_or(dtype)));
  int64_t tokens = int64_t{1} << 24;  // a cap far beyond any context, to stay in int
  for (size_t s = 0; s < ranges.size(); ++s) {
    const int64_t layers = ranges[s].second - ranges[s].first;
    const int64_t weights = StageWeightBytes(c, dtype, tp, ranges[s], c.n_layers - offloaded,
                                             s == 0, s + 1 == ranges.size());
    const int64_t room = budget[s] - weights;
    if (room < per_token_layer * layers * block_size) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "stage ", s, " (layers ", ranges[s].first, "-", ranges[s].second - 1, "): ",
          weights >> 20, " MiB of weights leave no room for a KV block in its ", budget[s] >> 20,
          " MiB budget (raise --gpu-memory-fraction, add devices or offload layers)"));
    }
    tokens = std::min(tokens, room / (per_token_layer * layers));
  }
  return static_cast<int>(tokens / block_size * block_size);
}

absl::StatusOr<std::vector<std::pair<int, int>>> PlanMemorySplit(
    const ModelConfig& c, int64_t kv_bytes_per_layer, const std::vector<int64_t>& capacity,
    int offloaded, DType dtype) {
  const int n = static_cast<int>(capacity.size()), L = c.n_layers;
  if (n > L) {
    return absl::InvalidArgumentError(absl::StrCat(n, " devices for ", L, " layers: a device would be empty"));
  }
  auto load = [&](int d, int a, int b) {
    return (b - a) * kv_bytes_per_layer +
           StageWeightBytes(c, dtype, 1, {a, b}, L - offloaded, d == 0, d == n - 1);
  };
  // best[d][i]: the smallest worst load/capacity ratio with layers [0, i) on devices [0, d).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(n + 1, std::vector<double>(L + 1, inf));
  std::vector<std::vector<int>> cut(n + 1, std::vector<int>(L + 1, 0));
  best[0][0] = 0;
  for (int d = 0; d < n; ++d) {
    for (int j = d + 1; j <= L; ++j) {
      for (int i = d; i < j; ++i) {
        const double r = std::max(best[d][i], double(load(d, i, j)) / double(capacity[d]));
        if (r < best[d + 1][j]) best[d + 1][j] = r, cut[d + 1][j] = i;
      }
    }
  }
  std::vector<std::pair<int, int>> ranges(n);
  for (int d = n, j = L; d > 0; j = cut[d][j], --d) ranges[d - 1] = {cut[d][j], j};
  for (int d = 0; d < n; ++d) {
    const int64_t need = load(d, ranges[d].first, ranges[d].second);
    if (need > capacity[d]) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "device ", d, " needs ", need >> 20, " MiB for layers ", ranges[d].first, "-",
          ranges[d].second - 1, " but has ", capacity[d] >> 20, " MiB"));
    }
  }
  return ranges;
}

}  // namespace lensd
