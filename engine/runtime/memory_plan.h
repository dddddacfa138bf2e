// Memory planning for a device map: the weight bytes of a pipeline stage, the layer split
// that balances weights and KV cache by capacity, the KV capacity a memory budget allows, and
// a bound on one step's activations. Pure functions of the architecture; no device access.
#ifndef LENSD_ENGINE_RUNTIME_MEMORY_PLAN_H_
#define LENSD_ENGINE_RUNTIME_MEMORY_PLAN_H_

#include <cstdint>
#include <utility>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"

namespace lensd {

// Balances layers by memory: contiguous ranges minimising the largest (weights + KV) /
// capacity ratio; embeddings count on the first device, the head on the last. `capacity` is
// each device's free bytes; RESOURCE_EXHAUSTED when the best plan does not fit. The last
// `offloaded` layers cost only their KV (their weights stay in host memory) plus two
// streaming slots on each device that holds any.
absl::StatusOr<std::vector<std::pair<int, int>>> PlanMemorySplit(
    const ModelConfig& c, int64_t kv_bytes_per_layer, const std::vector<int64_t>& capacity,
    int offloaded = 0, DType dtype = DType::kF32);

// Bytes of weights one pipeline stage holds on each of its `tp` ranks: its layers (the ones
// from `first_offloaded` on cost two streaming slots instead), embeddings on the first
// stage, the head on the last; matrices in `dtype`, vectors float32.
int64_t StageWeightBytes(const ModelConfig& c, DType dtype, int tp, std::pair<int, int> layers,
                         int first_offloaded, bool first_stage, bool last_stage);

// The largest KV capacity (a multiple of `block_size` tokens) whose pools (in `kv_dtype`,
// default `dtype`, the weight matrices') fit every stage's `budget` bytes next to its weights;
// RESOURCE_EXHAUSTED when a stage has no room for a block.
absl::StatusOr<int> KvTokensForBudget(const ModelConfig& c, DType dtype, int tp,
                                      const std::vector<std::pair<int, int>>& ranges,
                                      const std::vector<int64_t>& budget, int offloaded,
                                      int block_size, std::optional<DType> kv_dtype = {});

// An upper bound on the activation bytes live at once on one device during a step of `tokens`
// rows, of which `map_tokens` belong to sequences capturing attention maps: one block's
// activations (norm outputs and hooks, q/k/v/z, sublayer outputs, MLP hidden states — at full
// size, as tensor-parallel gathers may be), the maps, and the residual; or the head's logits.
int64_t StepActivationBytes(const ModelConfig& c, int64_t tokens, int64_t map_tokens);

// An upper bound on what a gradient step of `tokens` rows holds beyond its forward: every
// layer's saved input, the logits' gradient (host and device), and one layer's recomputed
// activations with the backward's scratch (`map_tokens`: rows whose attention-map gradients
// are captured).
int64_t GradientStepBytes(const ModelConfig& c, int64_t tokens, int64_t map_tokens);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_MEMORY_PLAN_H_
