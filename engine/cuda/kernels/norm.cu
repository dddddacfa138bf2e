#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "engine/cuda/kernels/block_reduce.cuh"
#include "engine/cuda/kernels/norm.h"

namespace lensd::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float ToFloat(float v) { return v; }
__device__ float ToFloat(__half v) { return __half2float(v); }
__device__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ T FromFloat(float v);
template <>
__device__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// One block per row: mean (LayerNorm only), then sum of squares, then the outputs.
template <typename T>
__global__ void NormKernel(bool layer_norm, const T* x, const T* w, const T* b, float eps, int d,
                           T* y, float* normalized, float* scale) {
  __shared__ float shared[32];
  const T* xr = x + static_cast<size_t>(blockIdx.x) * d;
  float mean = 0.0f;
  if (layer_norm) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += ToFloat(xr[i]);
    mean = BlockSum(s, shared) / d;
  }
  float sq = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float c = ToFloat(xr[i]) - mean;
    sq += c * c;
  }
  const float s = sqrtf(BlockSum(sq, shared) / d + eps);
  if (scale != nullptr && threadIdx.x == 0) scale[blockIdx.x] = s;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float n = (ToFloat(xr[i]) - mean) / s;
    if (normalized != nullptr) normalized[static_cast<size_t>(blockIdx.x) * d + i] = n;
    if (w != nullptr) n *= ToFloat(w[i]);
    if (b != nullptr) n += ToFloat(b[i]);
    y[static_cast<size_t>(blockIdx.x) * d + i] = FromFloat<T>(n);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchNorm(bool layer_norm, const T* x, const T* w, const T* b, float eps, int rows,
                       int d, T* y, float* normalized, float* scale, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  NormKernel<T><<<rows, kThreads, 0, stream>>>(layer_norm, x, w, b, eps, d, y, normalized, scale);
  return cudaGetLastError();
}

template cudaError_t LaunchNorm<float>(bool, const float*, const float*, const float*, float, int,
                                       int, float*, float*, float*, cudaStream_t);
template cudaError_t LaunchNorm<__half>(bool, const __half*, const __half*, const __half*, float,
                                        int, int, __half*, float*, float*, cudaStream_t);
template cudaError_t LaunchNorm<__nv_bfloat16>(bool, const __nv_bfloat16*, const __nv_bfloat16*,
                                               const __nv_bfloat16*, float, int, int,
                                               __nv_bfloat16*, float*, float*, cudaStream_t);

}  // namespace lensd::cuda
