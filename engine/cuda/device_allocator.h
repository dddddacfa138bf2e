// Process-wide caching allocator for device memory: freed blocks are kept per (device,
// stream owner, size class) and reused, so steady-state serving never calls cudaMalloc.
// A block is only reused by the owner that freed it: kernels of that owner's stream may still
// be using a block when its Buffer goes, and stream order makes reuse on the same stream safe
// — but not on another stream (several backends can share one card). When cudaMalloc fails,
// every cached free block of the device is released (cudaFree synchronises the device) and
// the allocation is tried once more. Buffers free themselves back into the cache.
#ifndef LENSD_ENGINE_CUDA_DEVICE_ALLOCATOR_H_
#define LENSD_ENGINE_CUDA_DEVICE_ALLOCATOR_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace lensd::cuda {

// Uninitialised memory on `device` for `dtype` x `shape`, used on the stream `owner` (any
// pointer naming it; CudaBackend passes its cudaStream_t).
absl::StatusOr<Buffer> AllocateDevice(int device, const void* owner, DType dtype, Shape shape);
// Bytes currently handed out and cached, for GetModelInfo / logs.
size_t DeviceBytesInUse(int device);

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_DEVICE_ALLOCATOR_H_
