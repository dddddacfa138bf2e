// Row normalisation (LayerNorm / RMSNorm) with the hook outputs TransformerLens exposes.
#ifndef LENSD_ENGINE_CUDA_KERNELS_NORM_H_
#define LENSD_ENGINE_CUDA_KERNELS_NORM_H_

#include <cuda_runtime.h>

namespace lensd::cuda {

// x, y, normalized: [rows, d] device memory; w, b: [d] or null; scale: [rows] or null;
// normalized: null when not captured. Same contract as Backend::Norm.
template <typename T>
cudaError_t LaunchNorm(bool layer_norm, const T* x, const T* w, const T* b, float eps, int rows,
                       int d, T* y, float* normalized, float* scale, cudaStream_t stream);

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_KERNELS_NORM_H_
