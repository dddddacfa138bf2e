#include "engine/cuda/cuda_handles.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace lensd::cuda {

absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

void CheckCuda(cudaError_t err, const char* what, const char* last_op) {
  if (err == cudaSuccess) return;
  // Kernels run asynchronously: a fault inside one is reported by the next call that waits.
  spdlog::critical("CUDA error at {}: {} ({}){}; the device is unusable: exiting so that lensd "
                   "is restarted (CUDA_LAUNCH_BLOCKING=1 names the faulting launch)",
                   what, cudaGetErrorString(err), cudaGetErrorName(err),
                   last_op ? absl::StrCat("; last op queued before it: ", last_op) : "");
  std::abort();
}

absl::Status BlasStatus(cublasStatus_t status, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat("cuBLASLt error in ", what, ": ",
                                           cublasLtGetStatusName(status), " (",
                                           cublasLtGetStatusString(status), ")");
  return status == CUBLAS_STATUS_ALLOC_FAILED ? absl::ResourceExhaustedError(message)
                                              : absl::InternalError(message);
}

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

absl::StatusOr<StreamPtr> NewStream() {
  cudaStream_t s;
  auto st = CudaStatus(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  if (!st.ok()) return st;
  return StreamPtr(s);
}

absl::StatusOr<EventPtr> NewEvent() {
  cudaEvent_t e;
  auto st = CudaStatus(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  if (!st.ok()) return st;
  return EventPtr(e);
}

absl::StatusOr<DevicePtr> DeviceAlloc(size_t bytes) {
  void* p = nullptr;
  auto st = CudaStatus(cudaMalloc(&p, bytes), "cudaMalloc");
  if (!st.ok()) return st;
  return DevicePtr(p);
}

absl::StatusOr<PinnedPtr> PinnedAlloc(size_t bytes) {
  void* p = nullptr;
  auto st = CudaStatus(cudaMallocHost(&p, bytes), "cudaMallocHost");
  if (!st.ok()) return st;
  return PinnedPtr(p);
}

absl::StatusOr<BlasLtPtr> NewBlasLt() {
  cublasLtHandle_t h;
  if (cublasLtCreate(&h) != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("cublasLtCreate failed");
  }
  return BlasLtPtr(h);
}

}  // namespace lensd::cuda
