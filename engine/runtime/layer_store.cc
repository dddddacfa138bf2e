#include "engine/runtime/layer_store.h"

#include <algorithm>

#include "engine/core/status.h"

namespace lensd {

LayerStore::~LayerStore() {
  for (auto& p : pending_) {
    if (p.valid()) p.wait();
  }
}

void LayerStore::AddResident(LayerWeights device) {
  resident_.push_back(std::move(device));
  host_.emplace_back();
}

void LayerStore::AddOffloaded(LayerWeights host) {
  for (const LayerTensorSpec& t : LayerTensorSpecs()) host_bytes_ += (host.*t.field).NumBytes();
  order_.push_back(static_cast<int>(host_.size()));
  host_.push_back(std::move(host));
  resident_.emplace_back();
}

absl::Status LayerStore::AllocateSlots(Backend& backend, DType dtype) {
  if (order_.empty()) return absl::OkStatus();
  const LayerWeights& like = host_[order_.front()];
  for (LayerWeights& slot : slots_) {
    for (const LayerTensorSpec& t : LayerTensorSpecs()) {
      const LayerTensor f = t.field;
      if ((like.*f).empty()) continue;
      const Shape& shape = (like.*f).shape();
      if (shape.rank == 2) {
        ASSIGN_OR_RETURN(slot.*f, backend.AllocateMatrix(StorageDType(shape, dtype), shape));
      } else {
        ASSIGN_OR_RETURN(slot.*f, backend.Allocate(StorageDType(shape, dtype), shape));
      }
      slot_bytes_ += (slot.*f).NumBytes();
    }
  }
  return absl::OkStatus();
}

void LayerStore::Prefetch(int k, Backend& backend) {
  const int slot = k % 2, layer = order_[k];
  if (slot_layer_[slot] == layer) return;  // already there or on its way
  if (pending_[slot].valid()) pending_[slot].wait();
  slot_layer_[slot] = layer;
  pending_[slot] = std::async(std::launch::async, [this, slot, layer, &backend] {
    for (const LayerTensorSpec& t : LayerTensorSpecs()) {
      const LayerTensor f = t.field;
      const Buffer& src = host_[layer].*f;
      if (src.empty()) continue;
      if (src.shape().rank == 2) {
        backend.UploadMatrix(src.As<float>(), (slots_[slot].*f).view());
      } else {
        backend.Upload(src.As<float>(), (slots_[slot].*f).view());
      }
    }
  });
}

void LayerStore::BeginPass(Backend& backend) {
  if (!order_.empty()) Prefetch(0, backend);
}

const LayerWeights& LayerStore::Get(int i, Backend& backend) {
  if (host_[i].wq.empty()) return resident_[i];
  const int k = static_cast<int>(std::find(order_.begin(), order_.end(), i) - order_.begin());
  Prefetch(k, backend);  // no-op when BeginPass or the previous layer already started it
  pending_[k % 2].wait();
  if (k + 1 < static_cast<int>(order_.size())) Prefetch(k + 1, backend);
  return slots_[k % 2];
}

}  // namespace lensd
