#include "engine/cuda/capture_stream.h"

#include <optional>

#include "engine/core/status.h"

namespace lensd::cuda {

absl::StatusOr<std::unique_ptr<CaptureStream>> CaptureStream::Create(int device, size_t bytes) {
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  ASSIGN_OR_RETURN(StreamPtr copy, NewStream());
  ASSIGN_OR_RETURN(EventPtr snapshot, NewEvent());
  ASSIGN_OR_RETURN(DevicePtr ring, DeviceAlloc(bytes));
  ASSIGN_OR_RETURN(PinnedPtr host_ring, PinnedAlloc(bytes));
  return std::unique_ptr<CaptureStream>(new CaptureStream(
      device, bytes, std::move(copy), std::move(snapshot), std::move(ring), std::move(host_ring)));
}

CaptureStream::CaptureStream(int device, size_t bytes, StreamPtr copy, EventPtr snapshot,
                             DevicePtr ring, PinnedPtr host_ring)
    : device_(device),
      copy_(std::move(copy)),
      snapshot_(std::move(snapshot)),
      ring_(std::move(ring)),
      host_ring_(std::move(host_ring)),
      space_(bytes),
      thread_([this] { DeliveryLoop(); }) {}

CaptureStream::~CaptureStream() {
  Flush();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

cudaEvent_t CaptureStream::TakeEvent() {
  if (free_events_.empty()) {
    events_.push_back(std::move(NewEvent()).value());  // a few per ring's worth, then reused
    free_events_.push_back(events_.back().get());
  }
  cudaEvent_t e = free_events_.back();
  free_events_.pop_back();
  return e;
}

bool CaptureStream::Push(TensorView src, cudaStream_t compute,
                         std::function<void(TensorView)> deliver) {
  const size_t bytes = src.NumBytes();
  if (bytes == 0 || bytes > space_.capacity()) return false;  // Place(0) would never succeed
  std::unique_lock<std::mutex> lock(mu_);
  std::optional<size_t> at;
  cv_.wait(lock, [&] { return (at = space_.Place(bytes)).has_value(); });
  char* snap = static_cast<char*>(ring_.get()) + *at;
  char* host = static_cast<char*>(host_ring_.get()) + *at;
  const cudaEvent_t copied = TakeEvent();
  CheckCuda(cudaMemcpyAsync(snap, src.data, bytes, cudaMemcpyDeviceToDevice, compute),
            "capture snapshot");
  CheckCuda(cudaEventRecord(snapshot_.get(), compute), "capture snapshot event");
  CheckCuda(cudaStreamWaitEvent(copy_.get(), snapshot_.get(), 0), "capture wait");
  CheckCuda(cudaMemcpyAsync(host, snap, bytes, cudaMemcpyDeviceToHost, copy_.get()),
            "capture device->host");
  CheckCuda(cudaEventRecord(copied, copy_.get()), "capture copied event");
  pending_.push_back({copied, TensorView{host, src.dtype, src.shape}, std::move(deliver)});
  cv_.notify_all();
  return true;
}

void CaptureStream::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return pending_.empty(); });
}

void CaptureStream::DeliveryLoop() {
  CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (pending_.empty()) return;   // stopping
    Pending& p = pending_.front();  // stays valid: the compute thread only appends
    lock.unlock();
    CheckCuda(cudaEventSynchronize(p.copied), "capture copy");
    p.deliver(p.host);
    lock.lock();
    free_events_.push_back(p.copied);
    pending_.pop_front();
    space_.ReleaseOldest();
    cv_.notify_all();
  }
}

}  // namespace lensd::cuda
