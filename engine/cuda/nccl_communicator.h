// Tensor-parallel collectives between CUDA devices with NCCL (one communicator per pipeline
// stage). All-reduce runs on the devices; all-gather (used only for captured activations,
// which go to host memory anyway) goes through host memory. This header includes no CUDA
// headers.
#ifndef LENSD_ENGINE_CUDA_NCCL_COMMUNICATOR_H_
#define LENSD_ENGINE_CUDA_NCCL_COMMUNICATOR_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/communicator.h"

namespace lensd {

// `devices`: the CUDA device of each rank, all distinct (NCCL allows one rank per device).
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const std::vector<int>& devices);

}  // namespace lensd

#endif  // LENSD_ENGINE_CUDA_NCCL_COMMUNICATOR_H_
