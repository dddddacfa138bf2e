// Attention for queries whose maps nobody reads (decode steps, above all): one thread block per
// (query, key/value head, up to kMaxGroup of its query heads), so each K and V row is read once
// for every query head of its group. The keys visible to the query are split into kWarps
// contiguous ranges, one per warp; in a warp the lanes share each row's dims (coalesced reads),
// every query head keeps an online softmax, and the warps' partial results are combined in warp
// order. The order of every sum depends only on the query's position and the window, never on
// the batch. Masking as CpuBackend: causal, and keys with q_pos - k_pos >= window when window > 0.
#include <cfloat>

#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxGroup = 8;  // query heads per block; larger groups take several blocks

template <typename T, int kMaxDh>
__global__ void DecodeAttentionKernel(const float* q, const T* k_pool, const T* v_pool,
                                      const int32_t* tables, const AttentionQuery* queries,
                                      int heads, int kv_heads, int dh, int block_size, float scale,
                                      int window, float softcap, float* z) {
  constexpr int kPerLane = kMaxDh / 32;
  __shared__ float part_m[kWarps][kMaxGroup], part_l[kWarps][kMaxGroup];
  __shared__ float part_acc[kWarps][kMaxGroup][kMaxDh];
  const AttentionQuery query = queries[blockIdx.x];
  const int kv_head = blockIdx.y, group = heads / kv_heads;
  const int h0 = kv_head * group + blockIdx.z * kMaxGroup;
  const int n_heads = min(kMaxGroup, group - static_cast<int>(blockIdx.z) * kMaxGroup);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  float qr[kMaxGroup][kPerLane], acc[kMaxGroup][kPerLane], m[kMaxGroup], l[kMaxGroup];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      qr[g][i] = g < n_heads && d < dh
                     ? q[(static_cast<int64_t>(query.row) * heads + h0 + g) * dh + d]
                     : 0.0f;
      acc[g][i] = 0.0f;
    }
  }
  const int first = window > 0 ? max(0, query.pos - window + 1) : 0;
  const int per_warp = (query.pos + 1 - first + kWarps - 1) / kWarps;
  const int j0 = first + warp * per_warp, j1 = min(query.pos + 1, j0 + per_warp);
  for (int j = j0; j < j1; ++j) {
    const int64_t slot =
        static_cast<int64_t>(tables[query.table_offset + j / block_size]) * block_size +
        j % block_size;
    const T* k = k_pool + (slot * kv_heads + kv_head) * dh;
    const T* v = v_pool + (slot * kv_heads + kv_head) * dh;
    float kr[kPerLane], vr[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      kr[i] = d < dh ? static_cast<float>(k[d]) : 0.0f;
      vr[i] = d < dh ? static_cast<float>(v[d]) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= n_heads) break;
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) dot += qr[g][i] * kr[i];
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffff, dot, o);
      float s = dot * scale;
      if (softcap > 0.0f) s = tanhf(s / softcap) * softcap;
      const float m_new = fmaxf(m[g], s);
      const float correction = expf(m[g] - m_new);  // 0 while m is -inf
      const float p = expf(s - m_new);
      l[g] = l[g] * correction + p;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) acc[g][i] = acc[g][i] * correction + p * vr[i];
      m[g] = m_new;
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (lane == 0) part_m[warp][g] = m[g], part_l[warp][g] = l[g];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < kMaxDh) part_acc[warp][g][d] = acc[g][i];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n_heads * dh; e += kThreads) {
    const int g = e / dh, d = e % dh;
    float most = -INFINITY;
    for (int w = 0; w < kWarps; ++w) most = fmaxf(most, part_m[w][g]);
    float sum = 0.0f, out = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (part_m[w][g] == -INFINITY) continue;  // a warp without keys
      const float weight = expf(part_m[w][g] - most);
      sum += part_l[w][g] * weight;
      out += part_acc[w][g][d] * weight;
    }
    z[(static_cast<int64_t>(query.row) * heads + h0 + g) * dh + d] =
        most == -INFINITY ? 0.0f : out / sum;
  }
}

template <typename T, int kMaxDh>
cudaError_t Launch(const float* q, const T* k_pool, const T* v_pool, const int32_t* tables,
                   const AttentionQuery* queries, int n_queries, int heads, int kv_heads, int dh,
                   int block_size, float scale, int window, float softcap, float* z,
                   cudaStream_t stream) {
  const int group = heads / kv_heads;
  const dim3 grid(n_queries, kv_heads, (group + kMaxGroup - 1) / kMaxGroup);
  DecodeAttentionKernel<T, kMaxDh>
      <<<grid, kThreads, 0, stream>>>(q, k_pool, v_pool, tables, queries, heads, kv_heads, dh,
                                      block_size, scale, window, softcap, z);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t LaunchDecodeAttention(const float* q, const T* k_pool, const T* v_pool,
                                  const int32_t* tables, const AttentionQuery* queries,
                                  int n_queries, int heads, int kv_heads, int dh, int block_size,
                                  float scale, int window, float softcap, float* z,
                                  cudaStream_t stream) {
  if (n_queries == 0) return cudaSuccess;
  if (dh > 256) return cudaErrorInvalidValue;
  auto launch = dh <= 128 ? Launch<T, 128> : Launch<T, 256>;
  return launch(q, k_pool, v_pool, tables, queries, n_queries, heads, kv_heads, dh, block_size,
                scale, window, softcap, z, stream);
}

#define LENSD_INSTANTIATE_(T)                                                                  \
  template cudaError_t LaunchDecodeAttention(const float*, const T*, const T*, const int32_t*, \
                                             const AttentionQuery*, int, int, int, int, int,   \
                                             float, int, float, float*, cudaStream_t);
LENSD_INSTANTIATE_(float)
LENSD_INSTANTIATE_(__nv_bfloat16)
LENSD_INSTANTIATE_(__half)
#undef LENSD_INSTANTIATE_

}  // namespace lensd::cuda
