// RAII ownership of CUDA C handles and CUDA error -> absl::Status conversion.
// Only engine/cuda/** includes CUDA headers.
#ifndef LENSD_ENGINE_CUDA_CUDA_HANDLES_H_
#define LENSD_ENGINE_CUDA_CUDA_HANDLES_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lensd::cuda {

absl::Status CudaStatus(cudaError_t err, const char* what);
// For errors after which the device is unusable (sticky errors): logs `what`, and `last_op`
// (the last call that succeeded before it) when given, then aborts, so that the process
// exits non-zero and an orchestrator restarts it.
void CheckCuda(cudaError_t err, const char* what, const char* last_op = nullptr);
// RESOURCE_EXHAUSTED for allocation failures, else INTERNAL; names the status and `what`.
absl::Status BlasStatus(cublasStatus_t status, const std::string& what);

struct StreamDeleter {
  void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};
struct EventDeleter {
  void operator()(cudaEvent_t e) const { cudaEventDestroy(e); }
};
struct BlasLtDeleter {
  void operator()(cublasLtHandle_t h) const { cublasLtDestroy(h); }
};
struct DeviceMemoryDeleter {
  void operator()(void* p) const { cudaFree(p); }
};
struct PinnedMemoryDeleter {
  void operator()(void* p) const { cudaFreeHost(p); }
};

using StreamPtr = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDeleter>;
using EventPtr = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDeleter>;
using BlasLtPtr = std::unique_ptr<std::remove_pointer_t<cublasLtHandle_t>, BlasLtDeleter>;
using DevicePtr = std::unique_ptr<void, DeviceMemoryDeleter>;
using PinnedPtr = std::unique_ptr<void, PinnedMemoryDeleter>;

// Number of visible CUDA devices; 0 (not an error) when there is no driver or device.
int DeviceCount();
absl::StatusOr<StreamPtr> NewStream();
absl::StatusOr<EventPtr> NewEvent();  // without timing
absl::StatusOr<DevicePtr> DeviceAlloc(size_t bytes);
absl::StatusOr<BlasLtPtr> NewBlasLt();
absl::StatusOr<PinnedPtr> PinnedAlloc(size_t bytes);

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_CUDA_HANDLES_H_
