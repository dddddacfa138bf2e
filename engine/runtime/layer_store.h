// One device's layer weights: resident layers live in device memory; offloaded layers stay in
// host memory (pinned on CUDA) and are streamed into two device slots ahead of use — while
// layer k computes, a prefetch thread uploads the next offloaded layer into the other slot.
// Used by one compute thread at a time (the rank that owns the device).
#ifndef LENSD_ENGINE_RUNTIME_LAYER_STORE_H_
#define LENSD_ENGINE_RUNTIME_LAYER_STORE_H_

#include <future>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/weights.h"
#include "engine/backend/backend.h"

namespace lensd {

class LayerStore {
 public:
  LayerStore() = default;
  ~LayerStore();  // waits for a prefetch in flight
  LayerStore(const LayerStore&) = delete;
  LayerStore& operator=(const LayerStore&) = delete;

  void AddResident(LayerWeights device);
  void AddOffloaded(LayerWeights host);
  // Allocates the two device slots (shaped like the offloaded layers, matrices in `dtype`)
  // once all are added.
  absl::Status AllocateSlots(Backend& backend, DType dtype);
  // Starts prefetching the first offloaded layer (call at the start of a forward pass).
  void BeginPass(Backend& backend);
  // The weights of local layer `i` on the device; prefetches the next offloaded layer.
  const LayerWeights& Get(int i, Backend& backend);

  int offloaded() const { return static_cast<int>(order_.size()); }
  size_t host_bytes() const { return host_bytes_; }
  size_t slot_bytes() const { return slot_bytes_; }

 private:
  void Prefetch(int k, Backend& backend);  // k-th offloaded layer into slot k % 2

  std::vector<LayerWeights> resident_;  // [local layer], empty when offloaded
  std::vector<LayerWeights> host_;      // [local layer], empty when resident
  std::vector<int> order_;              // local indices of offloaded layers, ascending
  LayerWeights slots_[2];
  int slot_layer_[2] = {-1, -1};        // local layer a slot holds or is receiving
  std::future<void> pending_[2];
  size_t host_bytes_ = 0, slot_bytes_ = 0;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_LAYER_STORE_H_
