// Access to the CUDA backend, which lives in a separately loaded module
// (liblensd_cuda_module.so, built when nvcc exists). Loading it only when a CUDA device is
// requested (or --devices auto looks for one) means lensd runs on hosts without CUDA
// libraries, and keeps cuBLASLt out of processes that never use it.
#ifndef LENSD_ENGINE_RUNTIME_CUDA_MODULE_H_
#define LENSD_ENGINE_RUNTIME_CUDA_MODULE_H_

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/backend/communicator.h"

namespace lensd {

// FailedPrecondition when the module is missing (a build without CUDA) or cannot load.
absl::StatusOr<std::unique_ptr<Backend>> LoadCudaBackend(int device);
// Visible CUDA devices (CUDA_VISIBLE_DEVICES applies); an error saying why there are none
// usable (no module, no driver).
absl::StatusOr<int> LoadCudaDeviceCount();
// Free and total bytes of `device`.
absl::StatusOr<std::pair<int64_t, int64_t>> LoadCudaMemoryInfo(int device);
absl::StatusOr<std::unique_ptr<Communicator>> LoadNcclCommunicator(const std::vector<int>& devices);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_CUDA_MODULE_H_
