// Tensor-parallel partition of a layer (Megatron-style): rank r of `tp` owns query heads
// [r·H/tp, (r+1)·H/tp) with their key/value heads and the matching input columns of the
// output projection, and MLP features [r·M/tp, (r+1)·M/tp). With fewer key/value heads than
// ranks (GQA), each key/value head is replicated on the tp/Hkv ranks whose query heads use
// it. Norms are replicated; the output-projection biases live on rank 0 so that the
// all-reduced sum adds them once.
#ifndef LENSD_ENGINE_RUNTIME_TENSOR_PARALLEL_H_
#define LENSD_ENGINE_RUNTIME_TENSOR_PARALLEL_H_

#include "absl/status/status.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace lensd {

// InvalidArgument unless heads and d_mlp divide by `tp` and key/value heads divide by it
// or it by them.
absl::Status CheckTensorParallel(const ModelConfig& c, int tp);
// Key/value heads per rank, and how many ranks hold each of them (1 without replication).
int KvHeadsPerRank(const ModelConfig& c, int tp);
int KvReplication(const ModelConfig& c, int tp);

// Host float32 canonical weights of layer `layer` for rank `rank`. A mixture of experts is
// split by whole experts: rank r holds experts [r·E/tp, (r+1)·E/tp) (their stacked rows), and
// every rank the router.
LayerWeights SliceLayer(const ModelConfig& c, int layer, const LayerWeights& w, int rank, int tp);

// The experts [first, end) of a mixture-of-experts layer that rank `rank` holds.
std::pair<int, int> ExpertsOfRank(const MoeParams& moe, int rank, int tp);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_TENSOR_PARALLEL_H_
