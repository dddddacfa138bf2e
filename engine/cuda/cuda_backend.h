// CudaBackend: the Backend interface on one CUDA device, float32 (TF32 off) so that it can be
// tested against CpuBackend at the CPU tolerances. GEMMs go through cuBLASLt (descriptors
// and algorithms cached per shape, fixed 16-row tiles so a row's result does not depend on
// its batch); the other ops are kernels in engine/cuda/kernels. Device memory comes from a
// caching allocator: after the first steps of a given shape, the request path allocates no
// device memory. This header includes no CUDA headers.
#ifndef LENSD_ENGINE_CUDA_CUDA_BACKEND_H_
#define LENSD_ENGINE_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/runtime/backend.h"

namespace lensd {

// NotFound when `device` does not exist (or there is no driver).
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device);
// Visible CUDA devices (0 without a driver).
int CudaDeviceCount();
// Free and total bytes of `device`.
absl::StatusOr<std::pair<int64_t, int64_t>> CudaMemoryInfo(int device);

}  // namespace lensd

#endif  // LENSD_ENGINE_CUDA_CUDA_BACKEND_H_
