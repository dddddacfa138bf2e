#include "engine/cuda/device_allocator.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lensd::cuda {
namespace {

// Size classes: 512-byte granules below 1 MiB, then 1/8 steps of the power of two, so that
// activations of slightly different step sizes share blocks.
size_t SizeClass(size_t bytes) {
  if (bytes <= (size_t{1} << 20)) return (bytes + 511) / 512 * 512;
  size_t p = size_t{1} << 20;
  while (p < bytes) p <<= 1;
  const size_t step = p / 16;
  return (bytes + step - 1) / step * step;
}

// Free lists are keyed by (device, owner, size class).
using Key = std::tuple<int, const void*, size_t>;

class Cache {
 public:
  absl::StatusOr<void*> Get(int device, const void* owner, size_t bytes) {
    const size_t size = SizeClass(bytes ? bytes : 1);
    std::lock_guard<std::mutex> lock(mu_);
    const Key key{device, owner, size};
    auto& free = free_[key];
    void* p = nullptr;
    if (!free.empty()) {
      p = free.back();
      free.pop_back();
    } else {
      int previous = 0;
      cudaGetDevice(&previous);
      cudaSetDevice(device);
      cudaError_t err = cudaMalloc(&p, size);
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        ReleaseCached(device);
        err = cudaMalloc(&p, size);
      }
      cudaSetDevice(previous);
      if (err != cudaSuccess) {
        cudaGetLastError();
        return absl::ResourceExhaustedError(absl::StrCat("cuda:", device, ": cannot allocate ",
                                                         size, " bytes: ", cudaGetErrorString(err)));
      }
      in_use_[device] += size;
    }
    blocks_[p] = key;
    return p;
  }
  void Put(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(p);
    if (it == blocks_.end()) return;
    free_[it->second].push_back(p);
    blocks_.erase(it);
  }
  size_t InUse(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    return in_use_[device];
  }

 private:
  // Gives the device's cached free blocks back to CUDA (on the current device, `device`).
  void ReleaseCached(int device) {
    for (auto& [key, list] : free_) {
      if (std::get<0>(key) != device) continue;
      for (void* p : list) cudaFree(p);
      in_use_[device] -= std::get<2>(key) * list.size();
      list.clear();
    }
  }

  std::mutex mu_;
  std::map<Key, std::vector<void*>> free_;
  std::unordered_map<void*, Key> blocks_;  // handed out
  std::map<int, size_t> in_use_;
};

Cache& GlobalCache() {
  static Cache* cache = new Cache();  // never destroyed: buffers may outlive static teardown
  return *cache;
}

void Release(void* p) { GlobalCache().Put(p); }

}  // namespace

absl::StatusOr<Buffer> AllocateDevice(int device, const void* owner, DType dtype, Shape shape) {
  const size_t bytes = static_cast<size_t>(shape.NumElements()) * DTypeSize(dtype);
  absl::StatusOr<void*> p = GlobalCache().Get(device, owner, bytes);
  if (!p.ok()) return p.status();
  return Buffer(*p, dtype, shape, &Release);
}

size_t DeviceBytesInUse(int device) { return GlobalCache().InUse(device); }

}  // namespace lensd::cuda
