#include "engine/cpu/host_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace lensd {
namespace {

constexpr size_t kHeader = 64;  // holds the block's size; keeps the data 64-byte aligned
// Fresh blocks this large are mapped: their pages are zero without a memset and untouched
// until used (a KV pool costs no resident memory until it fills).
constexpr size_t kMapThreshold = size_t{1} << 20;

void FreeBlock(void* base, size_t size) {
  if (size >= kMapThreshold) {
    ::munmap(base, size);
  } else {
    std::free(base);
  }
}

struct Pool {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free;  // by block size
  int64_t cached = 0;
};

Pool& ThePool() {
  static Pool* pool = new Pool();  // never destroyed: buffers may be freed during exit
  return *pool;
}

void Release(void* data) {
  char* base = static_cast<char*>(data) - kHeader;
  size_t size;
  std::memcpy(&size, base, sizeof(size));
  Pool& pool = ThePool();
  {
    std::lock_guard<std::mutex> lock(pool.mu);
    if (pool.cached + static_cast<int64_t>(size) <= kMaxCachedBytes) {
      pool.free[size].push_back(base);
      pool.cached += static_cast<int64_t>(size);
      return;
    }
  }
  FreeBlock(base, size);
}

}  // namespace

Buffer PooledHostBuffer(DType dtype, Shape shape, int64_t bytes) {
  // Page granularity, so that nearly equal sizes share blocks.
  const size_t size = (static_cast<size_t>(bytes) + kHeader + 4095) / 4096 * 4096;
  Pool& pool = ThePool();
  void* base = nullptr;
  {
    std::lock_guard<std::mutex> lock(pool.mu);
    auto it = pool.free.find(size);
    if (it != pool.free.end() && !it->second.empty()) {
      base = it->second.back();
      it->second.pop_back();
      pool.cached -= static_cast<int64_t>(size);
    }
  }
  const bool recycled = base != nullptr;
  if (!recycled && size >= kMapThreshold) {
    base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();  // as operator new does
  } else if (!recycled) {
    base = std::aligned_alloc(64, size);
    if (base == nullptr) throw std::bad_alloc();
  }
  std::memcpy(base, &size, sizeof(size));
  char* data = static_cast<char*>(base) + kHeader;
  if (recycled || size < kMapThreshold) std::memset(data, 0, size - kHeader);
  return Buffer(data, dtype, shape, &Release);
}

}  // namespace lensd
