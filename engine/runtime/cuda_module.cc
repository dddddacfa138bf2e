#include "engine/runtime/cuda_module.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace lensd {
namespace {

struct Module {
  void (*make_backend)(int, absl::StatusOr<std::unique_ptr<Backend>>*) = nullptr;
  void (*memory_info)(int, absl::StatusOr<std::pair<int64_t, int64_t>>*) = nullptr;
  void (*make_nccl)(const std::vector<int>*, absl::StatusOr<std::unique_ptr<Communicator>>*) = nullptr;
  std::string error;
};

std::string ExecutableDir() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  const std::string s(path, static_cast<size_t>(n));
  return s.substr(0, s.rfind('/'));
}

const Module& Get() {
  static const Module* module = [] {
    auto* m = new Module();
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("LENSD_CUDA_MODULE")) candidates.push_back(env);
#ifdef LENSD_CUDA_MODULE_PATH
    candidates.push_back(LENSD_CUDA_MODULE_PATH);
#endif
    candidates.push_back(ExecutableDir() + "/liblensd_cuda_module.so");
    std::string tried;
    void* handle = nullptr;
    for (const std::string& c : candidates) {
      if ((handle = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
      tried += "\n  " + c + ": " + dlerror();
    }
    if (handle == nullptr) {
      m->error = "no CUDA support: cannot load liblensd_cuda_module.so (built only when nvcc "
                 "exists); tried:" + tried;
      return m;
    }
    m->make_backend = reinterpret_cast<decltype(m->make_backend)>(dlsym(handle, "lensd_cuda_make_backend"));
    m->memory_info = reinterpret_cast<decltype(m->memory_info)>(dlsym(handle, "lensd_cuda_memory_info"));
    m->make_nccl = reinterpret_cast<decltype(m->make_nccl)>(dlsym(handle, "lensd_cuda_make_nccl"));
    if (!m->make_backend || !m->memory_info || !m->make_nccl) {
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
