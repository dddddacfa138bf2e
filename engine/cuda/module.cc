// The entry points of liblensd_cuda_module.so, loaded by engine/runtime/cuda_module.cc only
// when a CUDA device is requested. C linkage gives stable dlsym names; the arguments are C++
// types shared with the loader (one libstdc++, one abseil).
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/nccl_communicator.h"

extern "C" {

void lensd_cuda_make_backend(int device, absl::StatusOr<std::unique_ptr<lensd::Backend>>* out) {
  *out = lensd::MakeCudaBackend(device);
}

void lensd_cuda_device_count(absl::StatusOr<int>* out) { *out = lensd::CudaDeviceCountOrWhy(); }

void lensd_cuda_memory_info(int device, absl::StatusOr<std::pair<int64_t, int64_t>>* out) {
  *out = lensd::CudaMemoryInfo(device);
}

void lensd_cuda_make_nccl(const std::vector<int>* devices,
                          absl::StatusOr<std::unique_ptr<lensd::Communicator>>* out) {
  *out = lensd::MakeNcclCommunicator(*devices);
}

}  // extern "C"
