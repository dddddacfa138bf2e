// Asynchronous activation capture for one device — the engine of CudaBackend::CaptureAsync.
// Each captured tensor is first copied into a device ring on the compute stream (so compute
// may overwrite the original at once, at device-copy speed), then copied from there to the
// same offset of a pinned host ring on a separate copy stream, and handed to its deliver
// function on a delivery thread, in order, once that copy has finished. Ring space is
// released after delivery; a capture that finds the ring full waits for space (back-pressure
// from slow consumers reaches compute only then). All memory is allocated at creation.
#ifndef LENSD_ENGINE_CUDA_CAPTURE_STREAM_H_
#define LENSD_ENGINE_CUDA_CAPTURE_STREAM_H_

#include <cuda_runtime.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "engine/core/fifo_ring.h"
#include "engine/core/tensor.h"
#include "engine/cuda/cuda_handles.h"

namespace lensd::cuda {

class CaptureStream {
 public:
  // `bytes` of device ring and as much pinned host memory, on `device`.
  static absl::StatusOr<std::unique_ptr<CaptureStream>> Create(int device, size_t bytes);
  ~CaptureStream();  // delivers what is pending, then stops the delivery thread

  // Enqueues the capture of `src` (device memory, ready on `compute`); false, doing nothing,
  // when `src` is larger than the ring. Called by one compute thread at a time.
  bool Push(TensorView src, cudaStream_t compute, std::function<void(TensorView)> deliver);
  // Blocks until every pushed capture has been delivered.
  void Flush();

 private:
  struct Pending {
    cudaEvent_t copied;  // recorded on the copy stream after the device->host copy
    TensorView host;     // in the pinned ring
    std::function<void(TensorView)> deliver;
  };
  CaptureStream(int device, size_t bytes, StreamPtr copy, EventPtr snapshot, DevicePtr ring,
                PinnedPtr host_ring);
  void DeliveryLoop();
  cudaEvent_t TakeEvent();  // under mu_

  const int device_;
  StreamPtr copy_;
  EventPtr snapshot_;  // recorded on the compute stream after each snapshot copy
  DevicePtr ring_;
  PinnedPtr host_ring_;
  std::mutex mu_;
  std::condition_variable cv_;
  FifoRing space_ ABSL_GUARDED_BY(mu_);  // same offsets in both rings
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);  // oldest first
  std::vector<cudaEvent_t> free_events_ ABSL_GUARDED_BY(mu_);
  std::vector<EventPtr> events_;          // every event made, for destruction
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_CAPTURE_STREAM_H_
