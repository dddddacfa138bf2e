// Host memory of the CPU backend's tensors: zero-filled, 64-byte aligned, and recycled by
// size. A forward step allocates and frees the same shapes every time; handing the freed
// blocks back out avoids the page faults and mmap/munmap of fresh large allocations in the
// hot path. At most kMaxCachedBytes of freed blocks wait for reuse (process-wide).
#ifndef LENSD_ENGINE_CPU_HOST_POOL_H_
#define LENSD_ENGINE_CPU_HOST_POOL_H_

#include <cstdint>

#include "engine/core/tensor.h"

namespace lensd {

inline constexpr int64_t kMaxCachedBytes = int64_t{512} << 20;

// `bytes` of zeroed memory (at least what dtype × shape needs) as a Buffer of that shape.
Buffer PooledHostBuffer(DType dtype, Shape shape, int64_t bytes);
inline Buffer PooledHostBuffer(DType dtype, Shape shape) {
  return PooledHostBuffer(dtype, shape, shape.NumElements() * static_cast<int64_t>(DTypeSize(dtype)));
}

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_HOST_POOL_H_
