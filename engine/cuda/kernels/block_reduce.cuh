// The one block reduction of the CUDA kernels: a butterfly within each warp, then the warp
// results reduced the same way by warp 0. For a given block size the order is fixed, so a
// row's result never depends on what else the launch holds.
#ifndef LENSD_ENGINE_CUDA_KERNELS_BLOCK_REDUCE_CUH_
#define LENSD_ENGINE_CUDA_KERNELS_BLOCK_REDUCE_CUH_

#include <cmath>

namespace lensd::cuda {

struct SumOp {
  static constexpr float kIdentity = 0.0f;
  __device__ float operator()(float a, float b) const { return a + b; }
};

struct MaxOp {
  static constexpr float kIdentity = -INFINITY;
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Every thread of the block passes its `v` and gets the reduction. blockDim.x is a multiple of
// 32 (at most 1024); `shared` holds 32 floats. All threads must call it (it synchronises).
template <typename Op>
__device__ float BlockReduce(float v, float* shared, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffff, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? shared[lane] : Op::kIdentity;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffff, v, o));
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  const float r = shared[0];
  __syncthreads();  // `shared` may be reused as soon as this returns
  return r;
}

__device__ inline float BlockSum(float v, float* shared) { return BlockReduce(v, shared, SumOp{}); }

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_KERNELS_BLOCK_REDUCE_CUH_
