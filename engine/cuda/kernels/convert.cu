#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

template <typename T>
__global__ void NarrowKernel(const float* x, T* y, int64_t n) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) y[i] = static_cast<T>(x[i]);  // round to nearest even
}

}  // namespace

template <typename T>
cudaError_t LaunchNarrow(const float* x, T* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  NarrowKernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(x, y,
                                                                                              n);
  return cudaGetLastError();
}

template cudaError_t LaunchNarrow(const float*, __nv_bfloat16*, int64_t, cudaStream_t);
template cudaError_t LaunchNarrow(const float*, __half*, int64_t, cudaStream_t);

}  // namespace lensd::cuda
