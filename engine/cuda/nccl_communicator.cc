#include "engine/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/cuda/cuda_handles.h"
#include "engine/runtime/backend.h"

namespace lensd {
namespace {

void CheckNccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  spdlog::critical("NCCL error in {}: {}", what, ncclGetErrorString(r));
  std::abort();  // a failed collective leaves the ranks out of step: unrecoverable
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::vector<int> devices, std::vector<ncclComm_t> comms,
                   std::vector<cuda::StreamPtr> streams)
      : devices_(std::move(devices)), comms_(std::move(comms)), streams_(std::move(streams)),
        host_(MakeThreadCommunicator(static_cast<int>(devices_.size()))) {}
  ~NcclCommunicator() override {
    for (ncclComm_t c : comms_) ncclCommDestroy(c);
  }
  int size() const override { return static_cast<int>(devices_.size()); }

  void AllReduceSum(int rank, TensorView x, Backend& backend) override {
    backend.Synchronize();  // x is complete on the backend's stream
    cudaSetDevice(devices_[rank]);
    CheckNccl(ncclAllReduce(x.data, x.data, static_cast<size_t>(x.NumElements()), ncclFloat32,
                            ncclSum, comms_[rank], streams_[rank].get()),
              "ncclAllReduce");
    if (cudaStreamSynchronize(streams_[rank].get()) != cudaSuccess) {
      CheckNccl(ncclUnhandledCudaError, "cudaStreamSynchronize");
    }
  }

  void AllGather(int rank, TensorView local, TensorView out, Backend& backend, int stride) override {
    host_->AllGather(rank, local, out, backend, stride);
  }

 private:
  std::vector<int> devices_;
  std::vector<ncclComm_t> comms_;
  std::vector<cuda::StreamPtr> streams_;
  std::unique_ptr<Communicator> host_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const std::vector<int>& devices) {
  std::vector<ncclComm_t> comms(devices.size());
  const ncclResult_t r = ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data());
  if (r != ncclSuccess) {
    return absl::InternalError(absl::StrCat("ncclCommInitAll: ", ncclGetErrorString(r)));
  }
  std::vector<cuda::StreamPtr> streams;
  for (int d : devices) {
    RETURN_IF_ERROR(cuda::CudaStatus(cudaSetDevice(d), "cudaSetDevice"));
    ASSIGN_OR_RETURN(cuda::StreamPtr s, cuda::NewStream());
    streams.push_back(std::move(s));
  }
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(devices, std::move(comms), std::move(streams)));
}

}  // namespace lensd
