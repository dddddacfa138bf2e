#include <cfloat>

#include "engine/cuda/kernels/block_reduce.cuh"
#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxHeadDim = 256;

// One block per (query row, head), three passes over the keys (no per-key scratch, so any
// context length fits): max score, sum of exponentials, then probabilities · V in chunks of
// kThreads keys staged in shared memory. Masked keys score -inf and get probability 0,
// exactly as CpuBackend::AttendOne. Queries with given scores (interventions) read them for
// every key of the sequence instead of q·k; with a given pattern only the last pass runs.
template <typename T>
__global__ void AttentionKernel(const float* q, const T* k_pool, const T* v_pool,
                                const int32_t* tables, const AttentionQuery* queries, int heads,
                                int kv_heads, int dh, int block_size, float scale, int window,
                                float softcap, float* const* score_ptrs, float* const* pattern_ptrs,
                                const int* seq_n_q, float* z) {
  __shared__ float q_row[kMaxHeadDim];
  __shared__ float probs[kThreads];
  __shared__ int slots[kThreads];
  __shared__ float reduce[32];
  const AttentionQuery query = queries[blockIdx.x / heads];
  const int t = query.row, h = blockIdx.x % heads;
  const int kv_head = h / (heads / kv_heads), n_k = query.pos + 1;
  const int n_q = seq_n_q[query.seq];
  const int n_cols = n_k + (n_q - 1 - query.q_index);  // the sequence's full key count
  const int input = query.input;
  const int n_used = input == 0 ? n_k : n_cols;  // given maps may weigh any key
  float* scores = score_ptrs[query.seq];
  float* pattern = pattern_ptrs[query.seq];
  const int64_t out_row = (static_cast<int64_t>(h) * n_q + query.q_index) * n_cols;
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    q_row[d] = q[(static_cast<int64_t>(t) * heads + h) * dh + d];
  }
  __syncthreads();
  auto slot_of = [&](int j) {
    const int32_t block = tables[query.table_offset + j / block_size];
    return static_cast<int64_t>(block) * block_size + j % block_size;
  };
  auto score_of = [&](int j) {
    if (input == 1) return scores[out_row + j];
    if (window > 0 && query.pos - j >= window) return -INFINITY;
    const T* k = k_pool + (slot_of(j) * kv_heads + kv_head) * dh;
    float dot = 0.0f;
    for (int d = 0; d < dh; ++d) dot += q_row[d] * static_cast<float>(k[d]);
    const float s = dot * scale;
    return softcap > 0.0f ? tanhf(s / softcap) * softcap : s;
  };
  float local_max = -INFINITY;
  for (int j = threadIdx.x; input != 2 && j < n_used; j += blockDim.x) {
    local_max = fmaxf(local_max, score_of(j));
  }
  const float max_score = BlockReduce(local_max, reduce, MaxOp{});
  float local_sum = 0.0f;
  for (int j = threadIdx.x; input != 2 && j < n_used; j += blockDim.x) {
    const float s = score_of(j);
    local_sum += s == -INFINITY ? 0.0f : expf(s - max_score);
  }
  const float sum = BlockSum(local_sum, reduce);
  float acc[kMaxHeadDim / kThreads + 1] = {};
  for (int base = 0; base < n_cols; base += kThreads) {
    const int j = base + threadIdx.x;
    if (j < n_cols) {
      float p;
      if (input == 2) {
        p = pattern[out_row + j];
      } else {
        const float s = j < n_used ? score_of(j) : -INFINITY;  // keys after the query: masked
        p = s == -INFINITY ? 0.0f : expf(s - max_score) / sum;
        if (scores != nullptr && input == 0) scores[out_row + j] = s;
        if (pattern != nullptr) pattern[out_row + j] = p;
      }
      probs[threadIdx.x] = p;
      slots[threadIdx.x] = j < n_used ? static_cast<int>(slot_of(j)) : 0;
    }
    __syncthreads();
    const int chunk = min(kThreads, n_used - base);
    for (int c = 0; c < chunk; ++c) {
      if (probs[c] == 0.0f) continue;
      const T* v = v_pool + (static_cast<int64_t>(slots[c]) * kv_heads + kv_head) * dh;
      for (int d = threadIdx.x, r = 0; d < dh; d += blockDim.x, ++r) {
        acc[r] += probs[c] * static_cast<float>(v[d]);
      }
    }
    __syncthreads();
  }
  for (int d = threadIdx.x, r = 0; d < dh; d += blockDim.x, ++r) {
    z[(static_cast<int64_t>(t) * heads + h) * dh + d] = acc[r];
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchAttention(const float* q, const T* k_pool, const T* v_pool, const int32_t* tables,
                            const AttentionQuery* queries, int n_queries, int heads, int kv_heads,
                            int dh, int block_size, float scale, int window, float softcap,
                            float* const* score_ptrs, float* const* pattern_ptrs,
                            const int* seq_n_q, float* z, cudaStream_t stream) {
  if (n_queries == 0) return cudaSuccess;
  if (dh > kMaxHeadDim) return cudaErrorInvalidValue;
  AttentionKernel<<<n_queries * heads, kThreads, 0, stream>>>(
      q, k_pool, v_pool, tables, queries, heads, kv_heads, dh, block_size, scale, window, softcap,
      score_ptrs, pattern_ptrs, seq_n_q, z);
  return cudaGetLastError();
}

#define LENSD_INSTANTIATE_(T)                                                                      \
  template cudaError_t LaunchAttention(                                                            \
      const float*, const T*, const T*, const int32_t*, const AttentionQuery*, int, int, int, int, \
      int, float, int, float, float* const*, float* const*, const int*, float*, cudaStream_t);
LENSD_INSTANTIATE_(float)
LENSD_INSTANTIATE_(__nv_bfloat16)
LENSD_INSTANTIATE_(__half)
#undef LENSD_INSTANTIATE_

}  // namespace lensd::cuda
