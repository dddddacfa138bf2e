// CudaBackend: devices, memory and graph steps (the class: cuda_backend_impl.h).
#include "engine/cuda/cuda_backend.h"

#include "engine/core/status.h"
#include "engine/cuda/cuda_backend_impl.h"
#include "engine/cuda/device_allocator.h"

namespace lensd {

absl::StatusOr<Buffer> CudaBackend::Allocate(DType dtype, Shape shape) {
  if (!Use()) return error_;
  Buffer b;
  if (GraphStep()) {  // the arena, so that a replay finds the same addresses
    b = Buffer(graphs_->Allocate(shape.NumElements() * DTypeSize(dtype)), dtype, shape, nullptr);
  } else {
    absl::StatusOr<Buffer> made = cuda::AllocateDevice(device_, stream_.get(), dtype, shape);
    if (!made.ok()) {  // the step fails (TakeError); the device stays usable
      Fail(made.status());
      return made.status();
    }
    b = std::move(*made);
  }
  if (!Replaying()) {
    CheckCuda(cudaMemsetAsync(b.As<void>(), 0, b.NumBytes(), stream_.get()), "cudaMemsetAsync");
  }
  return b;
}

bool CudaBackend::Reserve(Buffer& buffer, size_t bytes) {
  if (buffer.NumBytes() >= bytes) return true;
  absl::StatusOr<Buffer> grown =
      cuda::AllocateDevice(device_, stream_.get(), DType::kI32, {int64_t(bytes / 4 + 1)});
  if (!grown.ok()) {
    Fail(grown.status());
    return false;
  }
  buffer = std::move(*grown);
  return true;
}

bool CudaBackend::BeginGraphStep(const GraphKey& key) {
  if (!Use()) return false;
  if (graphs_ == nullptr) {  // once, at the first decode step
    auto made = cuda::GraphSteps::Create(kGraphArena, kGraphMirror);
    if (!made.ok()) {
      spdlog::warn("cuda:{}: no CUDA graphs: {}", device_, made.status().ToString());
      return false;
    }
    graphs_ = std::move(*made);
  }
  return graphs_->Begin(key, stream_.get());
}

bool CudaBackend::EndGraphStep() {
  CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
  return graphs_->End(stream_.get());
}

void CudaBackend::Synchronize() {
  if (GraphStep()) return;  // nothing may wait inside a capture; a replay launches nothing
  CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
  CheckCuda(cudaStreamSynchronize(stream_.get()), "Synchronize");
  inputs_used_ = 0;
}

int CudaDeviceCount() { return cuda::DeviceCount(); }

absl::StatusOr<int> CudaDeviceCountOrWhy() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) return n;
  cudaGetLastError();  // not sticky: clear it
  return absl::UnavailableError(cudaGetErrorString(e));
}

namespace {
absl::Status CheckDeviceExists(int device) {
  const int count = cuda::DeviceCount();
  if (device >= 0 && device < count) return absl::OkStatus();
  return absl::NotFoundError(
      absl::StrCat("cuda:", device, " does not exist (", count, " CUDA devices visible)"));
}
}  // namespace

absl::StatusOr<std::pair<int64_t, int64_t>> CudaMemoryInfo(int device) {
  RETURN_IF_ERROR(CheckDeviceExists(device));
  RETURN_IF_ERROR(cuda::CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  size_t free = 0, total = 0;
  RETURN_IF_ERROR(cuda::CudaStatus(cudaMemGetInfo(&free, &total), "cudaMemGetInfo"));
  return std::pair<int64_t, int64_t>(static_cast<int64_t>(free), static_cast<int64_t>(total));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  RETURN_IF_ERROR(CheckDeviceExists(device));
  RETURN_IF_ERROR(cuda::CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  int sm_count = 0;
  RETURN_IF_ERROR(cuda::CudaStatus(
      cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device), "SM count"));
  ASSIGN_OR_RETURN(cuda::StreamPtr stream, cuda::NewStream());
  ASSIGN_OR_RETURN(cuda::StreamPtr upload_stream, cuda::NewStream());
  ASSIGN_OR_RETURN(cuda::EventPtr compute_done, cuda::NewEvent());
  ASSIGN_OR_RETURN(cuda::BlasLtPtr blas, cuda::NewBlasLt());
  ASSIGN_OR_RETURN(Buffer workspace, cuda::AllocateDevice(device, stream.get(), DType::kF32,
                                                          {int64_t(CudaBackend::kWorkspace / 4)}));
  ASSIGN_OR_RETURN(cuda::PinnedPtr staging, cuda::PinnedAlloc(CudaBackend::kStaging));
  ASSIGN_OR_RETURN(cuda::PinnedPtr inputs, cuda::PinnedAlloc(CudaBackend::kInputs));
  ASSIGN_OR_RETURN(auto capture, cuda::CaptureStream::Create(device, CudaBackend::kCaptureRing));
  return std::unique_ptr<Backend>(new CudaBackend(device, sm_count, std::move(stream),
                                                  std::move(upload_stream),
                                                  std::move(compute_done), std::move(blas),
                                                  std::move(workspace),
                                                  std::move(staging), std::move(inputs),
                                                  std::move(capture)));
}

}  // namespace lensd
