#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

// One block per token: copies its Hkv·dh row of k and v into the pools at its slot, rounded
// to the pools' type.
template <typename T>
__global__ void WriteKvKernel(const float* k, const float* v, const int32_t* slots, int row,
                              T* k_pool, T* v_pool) {
  const int64_t src = static_cast<int64_t>(blockIdx.x) * row;
  const int64_t dst = static_cast<int64_t>(slots[blockIdx.x]) * row;
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    k_pool[dst + i] = static_cast<T>(k[src + i]);
    v_pool[dst + i] = static_cast<T>(v[src + i]);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchWriteKv(const float* k, const float* v, const int32_t* slots, int tokens,
                          int row, T* k_pool, T* v_pool, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  WriteKvKernel<<<tokens, 256, 0, stream>>>(k, v, slots, row, k_pool, v_pool);
  return cudaGetLastError();
}

#define LENSD_INSTANTIATE_(T)                                                                  \
  template cudaError_t LaunchWriteKv(const float*, const float*, const int32_t*, int, int, T*, \
                                     T*, cudaStream_t);
LENSD_INSTANTIATE_(float)
LENSD_INSTANTIATE_(__nv_bfloat16)
LENSD_INSTANTIATE_(__half)
#undef LENSD_INSTANTIATE_

}  // namespace lensd::cuda
