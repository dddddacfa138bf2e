#include "engine/cuda/device_allocator.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
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

struct Block {
  int device;
  size_t size;
};

class Cache {
 public:
  absl::StatusOr<void*> Get(int device, size_t bytes) {
    const size_t size = SizeClass(bytes ? bytes : 1);
    std::lock_guard<std::mutex> lock(mu_);
    auto& free = free_[{device, size}];
    void* p = nullptr;
    if (!free.empty()) {
      p = free.back();
      free.pop_back();
    } else {
      int previous = 0;
      cudaGetDevice(&previous);
      cudaSetDevice(device);
      cudaError_t err = cudaMalloc(&p, size);
      cudaSetDevice(previous);
      if (err != cudaSuccess) {
        cudaGetLastError();
        return absl::ResourceExhaustedError(absl::StrCat("cuda:", device, ": cannot allocate ",
                                                         size, " bytes: ", cudaGetErrorString(err)));
      }
      in_use_[device] += size;
    }
    blocks_[p] = {device, size};
    return p;
  }
  void Put(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(p);
    if (it == blocks_.end()) return;
    free_[{it->second.device, it->second.size}].push_back(p);
    blocks_.erase(it);
  }
  size_t InUse(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    return in_use_[device];
  }

 private:
  std::mutex mu_;
  std::map<std::pair<int, size_t>, std::vector<void*>> free_;
  std::unordered_map<void*, Block> blocks_;
  std::map<int, size_t> in_use_;
};

Cache& GlobalCache() {
  static Cache* cache = new Cache();  // never destroyed: buffers may outlive static teardown
  return *cache;
}

void Release(void* p) { GlobalCache().Put(p); }

}  // namespace

absl::StatusOr<Buffer> AllocateDevice(int device, DType dtype, Shape shape) {
  const size_t bytes = static_cast<size_t>(shape.NumElements()) * DTypeSize(dtype);
  absl::StatusOr<void*> p = GlobalCache().Get(device, bytes);
  if (!p.ok()) return p.status();
  return Buffer(*p, dtype, shape, &Release);
}

size_t DeviceBytesInUse(int device) { return GlobalCache().InUse(device); }

}  // namespace lensd::cuda
