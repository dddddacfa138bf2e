#include "engine/runtime/cuda_module.h"

#include <dlfcn.h>

#include <string>

#include "engine/core/module_loader.h"

namespace lensd {
namespace {

struct Module {
  void (*make_backend)(int, absl::StatusOr<std::unique_ptr<Backend>>*) = nullptr;
  void (*device_count)(absl::StatusOr<int>*) = nullptr;
  void (*memory_info)(int, absl::StatusOr<std::pair<int64_t, int64_t>>*) = nullptr;
  void (*make_nccl)(const std::vector<int>*, absl::StatusOr<std::unique_ptr<Communicator>>*) = nullptr;
  std::string error;
};

const Module& Get() {
  static const Module* module = [] {
    auto* m = new Module();
#ifndef LENSD_CUDA_MODULE_PATH
#define LENSD_CUDA_MODULE_PATH ""  // a build without nvcc has no module of its own
#endif
    std::string error;
    void* handle = OpenModule("LENSD_CUDA_MODULE", LENSD_CUDA_MODULE_PATH,
                              "liblensd_cuda_module.so", RTLD_NOW | RTLD_LOCAL,
                              ModuleNamespace::kShared, &error);
    if (handle == nullptr) {
      m->error = "no CUDA support (the module is built only when nvcc exists): " + error;
      return m;
    }
    m->make_backend = reinterpret_cast<decltype(m->make_backend)>(dlsym(handle, "lensd_cuda_make_backend"));
    m->device_count = reinterpret_cast<decltype(m->device_count)>(dlsym(handle, "lensd_cuda_device_count"));
    m->memory_info = reinterpret_cast<decltype(m->memory_info)>(dlsym(handle, "lensd_cuda_memory_info"));
    m->make_nccl = reinterpret_cast<decltype(m->make_nccl)>(dlsym(handle, "lensd_cuda_make_nccl"));
    if (!m->make_backend || !m->device_count || !m->memory_info || !m->make_nccl) {
      m->error = "liblensd_cuda_module.so lacks its entry points (stale build?)";
    }
    return m;
  }();
  return *module;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> LoadCudaBackend(int device) {
  const Module& m = Get();
  if (!m.error.empty()) return absl::FailedPreconditionError(m.error);
  absl::StatusOr<std::unique_ptr<Backend>> out = absl::UnknownError("");
  m.make_backend(device, &out);
  return out;
}

absl::StatusOr<int> LoadCudaDeviceCount() {
  const Module& m = Get();
  if (!m.error.empty()) return absl::FailedPreconditionError(m.error);
  absl::StatusOr<int> out = absl::UnknownError("");
  m.device_count(&out);
  return out;
}

absl::StatusOr<std::pair<int64_t, int64_t>> LoadCudaMemoryInfo(int device) {
  const Module& m = Get();
  if (!m.error.empty()) return absl::FailedPreconditionError(m.error);
  absl::StatusOr<std::pair<int64_t, int64_t>> out = absl::UnknownError("");
  m.memory_info(device, &out);
  return out;
}

absl::StatusOr<std::unique_ptr<Communicator>> LoadNcclCommunicator(const std::vector<int>& devices) {
  const Module& m = Get();
  if (!m.error.empty()) return absl::FailedPreconditionError(m.error);
  absl::StatusOr<std::unique_ptr<Communicator>> out = absl::UnknownError("");
  m.make_nccl(&devices, &out);
  return out;
}

}  // namespace lensd
