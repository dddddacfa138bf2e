// Launchers of the CUDA kernels behind CudaBackend (float32 activations; weight matrices may
// be bfloat16 or float16, templates instantiated for those; one .cu per op). Pointers are
// device memory of the current device; every launcher enqueues on `stream` and returns the
// launch error. Contracts match the Backend methods of the same name.
#ifndef LENSD_ENGINE_CUDA_KERNELS_LAUNCHERS_H_
#define LENSD_ENGINE_CUDA_KERNELS_LAUNCHERS_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/backend/row_ops.h"

namespace lensd::cuda {

// ActKind values (engine/model/config.h) are passed as int to keep this header CUDA-only.
cudaError_t LaunchAdd(const float* a, const float* b, float* y, int64_t n, cudaStream_t stream);
cudaError_t LaunchActivation(int act, const float* x, float* y, int64_t n, cudaStream_t stream);
// dst[rows[i], :] += scales[i] · src[i, :] (src [n, d]; rows distinct; device arrays).
cudaError_t LaunchAddRowsScaled(const float* src, const int32_t* rows, const float* scales, int n,
                                int d, float* dst, cudaStream_t stream);
// x := x · scale, then cap · tanh(x / cap) when cap > 0.
cudaError_t LaunchScaleAndCap(float* x, float scale, float cap, int64_t n, cudaStream_t stream);
cudaError_t LaunchGatedActivation(int act, const float* gate, const float* up, float* y, int64_t n,
                                  cudaStream_t stream);
// y[t, :] = table[ids[t], :], widened to float32 (T: float, __nv_bfloat16, __half).
template <typename T>
cudaError_t LaunchGather(const T* table, const int32_t* ids, int rows, int d, float* y,
                         cudaStream_t stream);
// y = x rounded to T (__nv_bfloat16 or __half): GEMM inputs for reduced-precision weights.
template <typename T>
cudaError_t LaunchNarrow(const float* x, T* y, int64_t n, cudaStream_t stream);
// In place on x[T, heads, dh], first rotary_dim dims, half-split layout, times `scale`.
cudaError_t LaunchRope(float* x, const float* inv_freq, const int32_t* positions, int tokens,
                       int heads, int dh, int rotary_dim, float scale, cudaStream_t stream);
// pool[slots[t], :, :] = src[t, :, :] for k and v ([T, Hkv, dh]), rounded to the pools' T
// (float, __nv_bfloat16 or __half, as for every KV pool below).
template <typename T>
cudaError_t LaunchWriteKv(const float* k, const float* v, const int32_t* slots, int tokens,
                          int row, T* k_pool, T* v_pool, cudaStream_t stream);

// One query row's attention inputs (device arrays).
struct AttentionQuery {
  int row;           // row of q and z
  int pos;           // absolute position of the query
  int table_offset;  // into the concatenated block tables
  int seq;           // index into the per-sequence score/pattern outputs
  int q_index;       // query index within its sequence (row of scores/pattern)
  int input;         // AttentionSeq::Input: 0 queries, 1 given scores, 2 given pattern
};

// z[row, H, dh] = softmax(q·kᵀ·scale, causal, window) · v over the paged pool for each of the
// `n_queries` queries, one thread block per (query, head); optional scores / pattern outputs
// per sequence (`score_ptrs[seq]` / `pattern_ptrs[seq]`, [H, n_q, n_k], null when not
// captured). Decode steps, and prefill whose attention maps are captured, come here.
template <typename T>
cudaError_t LaunchAttention(const float* q, const T* k_pool, const T* v_pool, const int32_t* tables,
                            const AttentionQuery* queries, int n_queries, int heads, int kv_heads,
                            int dh, int block_size, float scale, int window, float softcap,
                            float* const* score_ptrs, float* const* pattern_ptrs,
                            const int* seq_n_q, float* z, cudaStream_t stream);

// The same z for queries whose scores and pattern nobody reads (input 0, no maps): one block
// per (query, key/value head, up to 8 of its query heads), each K/V row read once per group,
// the keys split over the block's warps. Head dims up to 256.
template <typename T>
cudaError_t LaunchDecodeAttention(const float* q, const T* k_pool, const T* v_pool,
                                  const int32_t* tables, const AttentionQuery* queries,
                                  int n_queries, int heads, int kv_heads, int dh, int block_size,
                                  float scale, int window, float softcap, float* z,
                                  cudaStream_t stream);

// The same z for one sequence's queries rows [q_begin, q_begin + n_q) at positions
// [start_pos, ...), flash-style: tiles of queries share each tile of keys, online softmax, no
// attention maps. `table`: the sequence's block ids (device). For prefill chunks.
// Up to 256 dims (Gemma 2/3): above 128 a block takes 67,776 B of shared memory (opted in).
inline constexpr int kFlashMaxHeadDim = 256;
template <typename T>
cudaError_t LaunchFlashAttention(const float* q, const T* k_pool, const T* v_pool,
                                 const int32_t* table, int q_begin, int n_q, int start_pos,
                                 int heads, int kv_heads, int dh, int block_size, float scale,
                                 int window, float softcap, float* z, cudaStream_t stream);

// Runs a RowOpPlan on x (ApplyRowOpsHost's semantics). Ops are grouped by row: row r's ops
// are [row_begin[r], row_begin[r + 1]) (n_rows + 1 entries). scratch holds every op's n
// elements at scratch_at[op]; copies read `source` (x itself: its values before any op).
cudaError_t LaunchRowOps(const RowOp* ops, int n_ops, const int* row_begin, int n_rows,
                         const RowSegment* segs, const float* values, const int64_t* scratch_at,
                         float* scratch, const float* source, float* x, cudaStream_t stream);

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_KERNELS_LAUNCHERS_H_
