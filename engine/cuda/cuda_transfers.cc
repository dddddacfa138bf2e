// CudaBackend: copies between host and device and between devices, and captures.
#include "engine/cuda/cuda_backend_impl.h"

namespace lensd {

void CudaBackend::Upload(const float* host, TensorView dst) {
  if (dst.data == nullptr) return;  // a failed step's buffer without memory (TakeError)
  std::lock_guard<std::mutex> lock(transfer_mu_);  // the offload prefetch thread uploads too
  // Any failure here leaves the device unusable (the copies allocate nothing): fatal, named.
  cuda::CheckCuda(cudaSetDevice(device_), "cudaSetDevice (upload)");
  cuda::CheckCuda(cudaEventRecord(compute_done_.get(), stream_.get()), "cudaEventRecord (upload)");
  cuda::CheckCuda(cudaStreamWaitEvent(upload_stream_.get(), compute_done_.get(), 0),
                  "cudaStreamWaitEvent (upload)");
  const size_t elem = DTypeSize(dst.dtype), per_chunk = kStaging / elem;
  for (int64_t i = 0; i < dst.NumElements(); i += per_chunk) {
    const size_t n = std::min<size_t>(per_chunk, dst.NumElements() - i);
    ConvertFromF32(host + i, dst.dtype, staging_host_.get(), n);
    cuda::CheckCuda(cudaMemcpyAsync(static_cast<char*>(dst.data) + i * elem, staging_host_.get(),
                                    n * elem, cudaMemcpyHostToDevice, upload_stream_.get()),
                    "Upload");
    cuda::CheckCuda(cudaStreamSynchronize(upload_stream_.get()), "Upload sync");
  }
}

void CudaBackend::Download(TensorView src, float* host) {
  if (GraphStep()) {  // after the graph has run
    graphs_->DeferDownload([this, src, host] { Download(src, host); });
    return;
  }
  if (!Use()) return;
  std::lock_guard<std::mutex> lock(transfer_mu_);
  const size_t elem = DTypeSize(src.dtype), per_chunk = kStaging / elem;
  for (int64_t i = 0; i < src.NumElements(); i += per_chunk) {
    const size_t n = std::min<size_t>(per_chunk, src.NumElements() - i);
    CheckCuda(cudaMemcpyAsync(staging_host_.get(), static_cast<const char*>(src.data) + i * elem,
                              n * elem, cudaMemcpyDeviceToHost, stream_.get()),
              "Download");
    CheckCuda(cudaStreamSynchronize(stream_.get()), "Download sync");
    ConvertToF32(src.dtype, staging_host_.get(), host + i, n);
  }
}

void CudaBackend::CaptureAsync(TensorView src, const std::function<void(TensorView)>& deliver) {
  if (!Use()) return;
  if (src.dtype == DType::kF32 && capture_->Push(src, stream_.get(), deliver)) return;
  capture_->Flush();  // empty, or too large for the ring: synchronously, after the earlier ones
  Backend::CaptureAsync(src, deliver);
}

bool CudaBackend::CopyToPeer(Backend& to, TensorView src, TensorView dst,
                             std::shared_ptr<void>* ready) {
  auto* peer = dynamic_cast<CudaBackend*>(&to);
  if (peer == nullptr || !Use()) return false;  // failed: the host path skips too
  if (peer->device_ != device_) {  // device_ of a backend never changes: safe to read
    int can = 0;
    cudaDeviceCanAccessPeer(&can, device_, peer->device_);
    if (!can) return false;
    const cudaError_t err = cudaDeviceEnablePeerAccess(peer->device_, 0);
    if (err == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
    else
      CheckCuda(err, "cudaDeviceEnablePeerAccess");
  }
  // On this stream, after the work that produced src; src is freed next on this same
  // stream, so its block is not reused before the copy has read it.
  CheckCuda(cudaMemcpyPeerAsync(dst.data, peer->device_, src.data, device_, src.NumBytes(),
                                stream_.get()),
            "cudaMemcpyPeerAsync");
  cudaEvent_t event;
  CheckCuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
  CheckCuda(cudaEventRecord(event, stream_.get()), "cudaEventRecord");
  *ready = std::shared_ptr<void>(event, [](void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); });
  return true;
}

void CudaBackend::WaitFor(const std::shared_ptr<void>& ready) {
  if (!Use()) return;
  CheckCuda(cudaStreamWaitEvent(stream_.get(), static_cast<cudaEvent_t>(ready.get()), 0),
            "cudaStreamWaitEvent");
}

}  // namespace lensd
