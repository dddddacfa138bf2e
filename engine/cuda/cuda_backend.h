// CudaBackend: the Backend interface on one CUDA device. Activations are float32; weight
// matrices are float32 (TF32 off, so it can be tested against CpuBackend at the CPU
// tolerances), bfloat16 or float16 (GEMM inputs rounded, float32 accumulation, as CpuBackend
// does). GEMMs go through cuBLASLt with one fixed algorithm per shape (cuda/gemm.h: a row's
// result does not depend on its batch); the other ops are kernels in engine/cuda/kernels;
// captures leave through cuda/capture_stream.h without stalling compute. Device memory comes
// from a caching allocator: after the first steps of a given shape, the request path
// allocates no device memory. This header includes no CUDA headers.
#ifndef LENSD_ENGINE_CUDA_CUDA_BACKEND_H_
#define LENSD_ENGINE_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace lensd {

// NotFound when `device` does not exist (or there is no driver).
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device);
// Visible CUDA devices (0 without a driver).
int CudaDeviceCount();
// The same, or why none can be used (no driver, driver too old, ...), for --devices auto.
absl::StatusOr<int> CudaDeviceCountOrWhy();
// Free and total bytes of `device`.
absl::StatusOr<std::pair<int64_t, int64_t>> CudaMemoryInfo(int device);

}  // namespace lensd

#endif  // LENSD_ENGINE_CUDA_CUDA_BACKEND_H_
