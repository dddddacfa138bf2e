#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

// One block per output row; the table's rows are widened to float32.
template <typename T>
__global__ void GatherKernel(const T* table, const int32_t* ids, int d, float* y) {
  const T* src = table + static_cast<int64_t>(ids[blockIdx.x]) * d;
  float* dst = y + static_cast<int64_t>(blockIdx.x) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = static_cast<float>(src[i]);
}

}  // namespace

template <typename T>
cudaError_t LaunchGather(const T* table, const int32_t* ids, int rows, int d, float* y,
                         cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  GatherKernel<<<rows, 256, 0, stream>>>(table, ids, d, y);
  return cudaGetLastError();
}

template cudaError_t LaunchGather(const float*, const int32_t*, int, int, float*, cudaStream_t);
template cudaError_t LaunchGather(const __nv_bfloat16*, const int32_t*, int, int, float*,
                                  cudaStream_t);
template cudaError_t LaunchGather(const __half*, const int32_t*, int, int, float*, cudaStream_t);

}  // namespace lensd::cuda
