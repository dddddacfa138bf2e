#include <atomic>
#include <cfloat>

#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

constexpr int kBq = 32;  // queries per thread block
constexpr int kBk = 16;  // keys per tile
constexpr int kThreads = 128;
constexpr int kRowThreads = kThreads / kBq;  // threads sharing one query row

// One block per (tile of kBq queries, head). Key tiles are gathered from the paged pool into
// shared memory once per tile of queries (not once per query), scores of the tile are
// computed in shared memory, and each query row keeps a running max / sum / output
// (online softmax), so nothing of size [queries, keys] is ever stored. Masking as
// CpuBackend: causal, and keys with q_pos - k_pos >= window when window > 0. kMaxDh (128 or
// 256) sizes each thread's accumulator registers: kMaxDh / kRowThreads dims.
template <typename T, int kMaxDh>
__global__ void FlashAttentionKernel(const float* q, const T* k_pool, const T* v_pool,
                                     const int32_t* table, int q_begin, int n_q, int start_pos,
                                     int heads, int kv_heads, int dh, int block_size, float scale,
                                     int window, float softcap, float* z) {
  extern __shared__ float smem[];
  const int k_stride = dh + 1;      // padded: the score loop reads K rows across a warp
  float* qs = smem;                 // [kBq, dh]
  float* ks = qs + kBq * dh;        // [kBk, dh + 1]
  float* vs = ks + kBk * k_stride;  // [kBk, dh]
  float* ss = vs + kBk * dh;        // [kBq, kBk + 1]
  const int h = blockIdx.y, kv_head = h / (heads / kv_heads);
  const int q0 = blockIdx.x * kBq, rows = min(kBq, n_q - q0);
  for (int i = threadIdx.x; i < kBq * dh; i += kThreads) {
    const int r = i / dh, d = i % dh;
    qs[i] = r < rows ? q[(static_cast<int64_t>(q_begin + q0 + r) * heads + h) * dh + d] : 0.0f;
  }
  constexpr int kDims = kMaxDh / kRowThreads;
  const int r = threadIdx.x / kRowThreads, lane = threadIdx.x % kRowThreads;
  float acc[kDims];
#pragma unroll
  for (int j = 0; j < kDims; ++j) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int last_pos = start_pos + q0 + rows - 1;
  const int first_key = window > 0 ? max(0, start_pos + q0 - window + 1) / kBk * kBk : 0;
  for (int k0 = first_key; k0 <= last_pos; k0 += kBk) {
    __syncthreads();  // the previous tile is consumed (and Q is loaded, on the first pass)
    for (int i = threadIdx.x; i < kBk * dh; i += kThreads) {
      const int c = i / dh, d = i % dh, j = k0 + c;
      float kv = 0.0f, vv = 0.0f;
      if (j <= last_pos) {
        const int64_t slot =
            static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
        const int64_t at = (slot * kv_heads + kv_head) * dh + d;
        kv = static_cast<float>(k_pool[at]);
        vv = static_cast<float>(v_pool[at]);
      }
      ks[c * k_stride + d] = kv;
      vs[i] = vv;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kBq * kBk; e += kThreads) {
      const int rr = e / kBk, c = e % kBk, j = k0 + c, pos = start_pos + q0 + rr;
      float s = -INFINITY;
      if (rr < rows && j <= pos && !(window > 0 && pos - j >= window)) {
        float dot = 0.0f;
        for (int d = 0; d < dh; ++d) dot += qs[rr * dh + d] * ks[c * k_stride + d];
        s = dot * scale;
        if (softcap > 0.0f) s = tanhf(s / softcap) * softcap;
      }
      ss[rr * (kBk + 1) + c] = s;
    }
    __syncthreads();
    float tile_max = -INFINITY;
    for (int c = 0; c < kBk; ++c) tile_max = fmaxf(tile_max, ss[r * (kBk + 1) + c]);
    const float m_new = fmaxf(m, tile_max);
    if (m_new == -INFINITY) continue;          // nothing visible to this row yet
    const float correction = expf(m - m_new);  // 0 while m is -inf
    l *= correction;
#pragma unroll
    for (int j = 0; j < kDims; ++j) acc[j] *= correction;
    for (int c = 0; c < kBk; ++c) {
      const float s = ss[r * (kBk + 1) + c];
      if (s == -INFINITY) continue;
      const float p = expf(s - m_new);
      l += p;
#pragma unroll
      for (int j = 0; j < kDims; ++j) {
        const int d = lane + j * kRowThreads;
        if (d < dh) acc[j] += p * vs[c * dh + d];
      }
    }
    m = m_new;
  }
  if (r >= rows) return;
  float* out = z + (static_cast<int64_t>(q_begin + q0 + r) * heads + h) * dh;
#pragma unroll
  for (int j = 0; j < kDims; ++j) {
    const int d = lane + j * kRowThreads;
    if (d < dh) out[d] = acc[j] / l;
  }
}

// Launches the kernel for heads of up to kMaxDh dims. Above 48 KiB of shared memory (head dim
// 256: 67,776 bytes) a kernel must opt in once; Hopper allows up to 227 KiB a block.
template <typename T, int kMaxDh>
cudaError_t Launch(const float* q, const T* k_pool, const T* v_pool, const int32_t* table,
                   int q_begin, int n_q, int start_pos, int heads, int kv_heads, int dh,
                   int block_size, float scale, int window, float softcap, float* z,
                   cudaStream_t stream) {
  const size_t shared = sizeof(float) * (kBq * dh + kBk * (dh + 1) + kBk * dh + kBq * (kBk + 1));
  static std::atomic<bool> opted_in{false};  // per instantiation; retried until it succeeds
  if (!opted_in.load()) {
    const int most = static_cast<int>(
        sizeof(float) * (kBq * kMaxDh + kBk * (kMaxDh + 1) + kBk * kMaxDh + kBq * (kBk + 1)));
    const cudaError_t err = cudaFuncSetAttribute(
        FlashAttentionKernel<T, kMaxDh>, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    if (err != cudaSuccess) return err;
    opted_in.store(true);
  }
  const dim3 grid((n_q + kBq - 1) / kBq, heads);
  FlashAttentionKernel<T, kMaxDh>
      <<<grid, kThreads, shared, stream>>>(q, k_pool, v_pool, table, q_begin, n_q, start_pos, heads,
                                           kv_heads, dh, block_size, scale, window, softcap, z);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t LaunchFlashAttention(const float* q, const T* k_pool, const T* v_pool,
                                 const int32_t* table, int q_begin, int n_q, int start_pos,
                                 int heads, int kv_heads, int dh, int block_size, float scale,
                                 int window, float softcap, float* z, cudaStream_t stream) {
  if (n_q == 0) return cudaSuccess;
  if (dh > kFlashMaxHeadDim) return cudaErrorInvalidValue;
  auto launch = dh <= 128 ? Launch<T, 128> : Launch<T, 256>;
  return launch(q, k_pool, v_pool, table, q_begin, n_q, start_pos, heads, kv_heads, dh, block_size,
                scale, window, softcap, z, stream);
}

#define LENSD_INSTANTIATE_(T)                                                                      \
  template cudaError_t LaunchFlashAttention(const float*, const T*, const T*, const int32_t*, int, \
                                            int, int, int, int, int, int, float, int, float,       \
                                            float*, cudaStream_t);
LENSD_INSTANTIATE_(float)
LENSD_INSTANTIATE_(__nv_bfloat16)
LENSD_INSTANTIATE_(__half)
#undef LENSD_INSTANTIATE_

}  // namespace lensd::cuda
