#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

constexpr int kThreads = 256;

// Mirrors CpuBackend's ApplyAct: 0 GELU-tanh, 1 GELU-erf, 2 SiLU, 3 ReLU (ActKind order).
__device__ float Act(int act, float x) {
  switch (act) {
    case 0: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 1: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case 2: return x / (1.0f + expf(-x));
    default: return x > 0.0f ? x : 0.0f;
  }
}

__global__ void AddKernel(const float* a, const float* b, float* y, int64_t n) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a[i] + b[i];
}

__global__ void ScaleAndCapKernel(float* x, float scale, float cap, int64_t n) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i] * scale;
  if (cap > 0.0f) v = tanhf(v / cap) * cap;
  x[i] = v;
}

__global__ void AddRowsScaledKernel(const float* src, const int32_t* rows, const float* scales,
                                    int n, int d, float* dst) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= int64_t{n} * d) return;
  const int64_t r = i / d, c = i % d;
  const float scaled = src[i] * scales[r];
  dst[int64_t{rows[r]} * d + c] += scaled;
}

__global__ void ActKernel(int act, const float* x, float* y, int64_t n) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) y[i] = Act(act, x[i]);
}

__global__ void GatedKernel(int act, const float* gate, const float* up, float* y, int64_t n) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) y[i] = Act(act, gate[i]) * up[i];
}

unsigned Blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

cudaError_t LaunchAdd(const float* a, const float* b, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AddKernel<<<Blocks(n), kThreads, 0, stream>>>(a, b, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchScaleAndCap(float* x, float scale, float cap, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  ScaleAndCapKernel<<<Blocks(n), kThreads, 0, stream>>>(x, scale, cap, n);
  return cudaGetLastError();
}

cudaError_t LaunchAddRowsScaled(const float* src, const int32_t* rows, const float* scales, int n,
                                int d, float* dst, cudaStream_t stream) {
  const int64_t total = int64_t{n} * d;
  if (total == 0) return cudaSuccess;
  AddRowsScaledKernel<<<Blocks(total), kThreads, 0, stream>>>(src, rows, scales, n, d, dst);
  return cudaGetLastError();
}

cudaError_t LaunchActivation(int act, const float* x, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  ActKernel<<<Blocks(n), kThreads, 0, stream>>>(act, x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchGatedActivation(int act, const float* gate, const float* up, float* y, int64_t n,
                                  cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  GatedKernel<<<Blocks(n), kThreads, 0, stream>>>(act, gate, up, y, n);
  return cudaGetLastError();
}

}  // namespace lensd::cuda
