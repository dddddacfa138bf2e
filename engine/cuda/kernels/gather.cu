#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

// One block per output row.
__global__ void GatherKernel(const float* table, const int32_t* ids, int d, float* y) {
  const float* src = table + static_cast<int64_t>(ids[blockIdx.x]) * d;
  float* dst = y + static_cast<int64_t>(blockIdx.x) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

cudaError_t LaunchGather(const float* table, const int32_t* ids, int rows, int d, float* y,
                         cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  GatherKernel<<<rows, 256, 0, stream>>>(table, ids, d, y);
  return cudaGetLastError();
}

}  // namespace lensd::cuda
