#include "engine/cuda/kernels/launchers.h"

namespace lensd::cuda {
namespace {

// One block per (token, head); thread i rotates the pair (i, i + rotary_dim / 2) and scales it.
__global__ void RopeKernel(float* x, const float* inv_freq, const int32_t* positions, int heads,
                           int dh, int rotary_dim, float scale) {
  const int t = blockIdx.x / heads;
  float* row = x + static_cast<int64_t>(blockIdx.x) * dh;
  const int half = rotary_dim / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // The angle in double, as the CPU backend computes it (positions reach 1e5+).
    const double angle = static_cast<double>(positions[t]) * inv_freq[i];
    const float c = static_cast<float>(cos(angle)) * scale;
    const float s = static_cast<float>(sin(angle)) * scale;
    const float a = row[i], b = row[i + half];
    row[i] = a * c - b * s;
    row[i + half] = b * c + a * s;
  }
}

}  // namespace

cudaError_t LaunchRope(float* x, const float* inv_freq, const int32_t* positions, int tokens,
                       int heads, int dh, int rotary_dim, float scale, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  RopeKernel<<<tokens * heads, 64, 0, stream>>>(x, inv_freq, positions, heads, dh, rotary_dim,
                                                scale);
  return cudaGetLastError();
}

}  // namespace lensd::cuda
