// What --devices names (virtual CPU devices, CUDA devices), each device's backend, and the
// communicator of a tensor-parallel stage.
#ifndef LENSD_ENGINE_RUNTIME_DEVICES_H_
#define LENSD_ENGINE_RUNTIME_DEVICES_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/backend/communicator.h"

namespace lensd {

struct DeviceSpec {
  bool cuda = false;
  int index = 0;
};

// "auto", "cpu", "cpu:0,cpu:1" (virtual CPU devices) or "cuda:0,cuda:1"; a CUDA device may
// appear more than once (several logical shards on one card).
absl::StatusOr<std::vector<DeviceSpec>> ParseDevices(std::string spec);

// The backend of `d` (`threads`: CPU compute threads, 0 for one per hardware thread).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const DeviceSpec& d, int threads);

// What --devices auto means, given the visible CUDA devices (or why there are none):
// "cuda:0,...,cuda:N-1", else "cpu". Logs the choice and its reason.
std::string AutoDevices(const absl::StatusOr<int>& cuda_devices);

// The backend of one device ("cpu", "cpu:N" or "cuda:N"), made as Model::Load makes them.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackendFor(const std::string& device,
                                                        int threads = 0);

// The tensor-parallel communicator of pipeline stage `stage` (ranks devices[stage * tp ...]):
// NCCL between distinct CUDA devices; otherwise (virtual CPUs, or several ranks on one card,
// which NCCL does not allow) the thread communicator through host memory.
absl::StatusOr<std::unique_ptr<Communicator>> MakeStageCommunicator(
    const std::vector<DeviceSpec>& devices, int stage, int tp);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_DEVICES_H_
