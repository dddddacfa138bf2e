// Devices: what --devices names, each device's backend, a stage's communicator.
#include "engine/runtime/devices.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/core/status.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/runtime/cuda_module.h"

namespace lensd {

// "auto", "cpu", "cpu:0,cpu:1" (virtual CPU devices) or "cuda:0,cuda:1"; a CUDA device may
// appear more than once (several logical shards on one card).
absl::StatusOr<std::vector<DeviceSpec>> ParseDevices(std::string spec) {
  if (spec == "auto") spec = AutoDevices(LoadCudaDeviceCount());
  if (spec.empty() || spec == "cpu") return std::vector<DeviceSpec>{{false, 0}};
  std::vector<DeviceSpec> out;
  for (absl::string_view d : absl::StrSplit(spec, ',')) {
    DeviceSpec device;
    device.cuda = absl::ConsumePrefix(&d, "cuda:");
    if ((!device.cuda && !absl::ConsumePrefix(&d, "cpu:")) || !absl::SimpleAtoi(d, &device.index) ||
        device.index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad --devices '", spec, "': expected auto, cpu, cpu:0,cpu:1,... or cuda:0,..."));
    }
    for (const DeviceSpec& seen : out) {
      if (!device.cuda && !seen.cuda && seen.index == device.index) {
        return absl::InvalidArgumentError("--devices lists a CPU device twice");
      }
    }
    out.push_back(device);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const DeviceSpec& d, int threads) {
  if (d.cuda) return LoadCudaBackend(d.index);
  return MakeCpuBackend(d.index, threads);
}

std::string AutoDevices(const absl::StatusOr<int>& cuda_devices) {
  if (!cuda_devices.ok() || *cuda_devices <= 0) {
    spdlog::info("devices auto: no CUDA device ({}); computing on the CPU",
                 cuda_devices.ok() ? "none visible" : std::string(cuda_devices.status().message()));
    return "cpu";
  }
  std::string out;
  for (int i = 0; i < *cuda_devices; ++i) absl::StrAppend(&out, i ? "," : "", "cuda:", i);
  spdlog::info("devices auto: {} CUDA device{} ({})", *cuda_devices, *cuda_devices > 1 ? "s" : "", out);
  return out;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackendFor(const std::string& device, int threads) {
  ASSIGN_OR_RETURN(std::vector<DeviceSpec> d, ParseDevices(device));
  if (d.size() != 1) return absl::InvalidArgumentError("expected one device, got '" + device + "'");
  return MakeBackend(d[0], threads);
}

// NCCL between distinct CUDA devices; otherwise (virtual CPUs, or several ranks on one card,
// which NCCL does not allow) the thread communicator through host memory.
absl::StatusOr<std::unique_ptr<Communicator>> MakeStageCommunicator(
    const std::vector<DeviceSpec>& devices, int stage, int tp) {
  std::vector<int> cuda_devices;
  for (int r = 0; r < tp; ++r) {
    const DeviceSpec& d = devices[stage * tp + r];
    if (!d.cuda) break;
    if (std::find(cuda_devices.begin(), cuda_devices.end(), d.index) != cuda_devices.end()) break;
    cuda_devices.push_back(d.index);
  }
  if (static_cast<int>(cuda_devices.size()) == tp) return LoadNcclCommunicator(cuda_devices);
  return MakeThreadCommunicator(tp);
}

}  // namespace lensd
