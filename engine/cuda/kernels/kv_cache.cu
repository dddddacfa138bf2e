#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

// One block per token: copies its Hkv·dh row of k and v into the pools at its slot.
__global__ void WriteKvKernel(const float* k, const float* v, const int32_t* slots, int row,
                              float* k_pool, float* v_pool) {
  const int64_t src = static_cast<int64_t>(blockIdx.x) * row;
  const int64_t dst = static_cast<int64_t>(slots[blockIdx.x]) * row;
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    k_pool[dst + i] = k[src + i];
    v_pool[dst + i] = v[src + i];
  }
}

}  // namespace

cudaError_t LaunchWriteKv(const float* k, const float* v, const int32_t* slots, int tokens,
                          int row, float* k_pool, float* v_pool, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  WriteKvKernel<<<tokens, 256, 0, stream>>>(k, v, slots, row, k_pool, v_pool);
  return cudaGetLastError();
}

}  // namespace lensd::cuda
