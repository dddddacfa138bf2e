// Process-wide caching allocator for device memory: freed blocks are kept per (device, size
// class) and reused, so steady-state serving never calls cudaMalloc. Buffers created here
// free themselves back into the cache (Buffer's deleter is a plain function).
#ifndef LENSD_ENGINE_CUDA_DEVICE_ALLOCATOR_H_
#define LENSD_ENGINE_CUDA_DEVICE_ALLOCATOR_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace lensd::cuda {

// Uninitialised device memory on the current device for `dtype` x `shape`.
absl::StatusOr<Buffer> AllocateDevice(int device, DType dtype, Shape shape);
// Bytes currently handed out and cached, for GetModelInfo / logs.
size_t DeviceBytesInUse(int device);

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_DEVICE_ALLOCATOR_H_
