#include "engine/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/cuda/cuda_handles.h"
#include "engine/backend/backend.h"

namespace lensd {
namespace {

// NCCL is opened on first use, not linked: one GPU never needs it, and a host (or a GPU check)
// without libnccl.so.2 must still run everything else. LENSD_NCCL_LIBRARY names another file.
struct NcclApi {
  decltype(&ncclCommInitAll) comm_init_all = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  std::string error;  // why it is unavailable; empty when loaded
};

const NcclApi& Nccl() {
  static const NcclApi api = [] {
    NcclApi a;
    const char* file = std::getenv("LENSD_NCCL_LIBRARY");
    if (file == nullptr || *file == '\0') file = "libnccl.so.2";
    void* handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      a.error = absl::StrCat("NCCL is not available (", dlerror(), ")");
      return a;
    }
    a.comm_init_all = reinterpret_cast<decltype(a.comm_init_all)>(dlsym(handle, "ncclCommInitAll"));
    a.comm_destroy = reinterpret_cast<decltype(a.comm_destroy)>(dlsym(handle, "ncclCommDestroy"));
    a.all_reduce = reinterpret_cast<decltype(a.all_reduce)>(dlsym(handle, "ncclAllReduce"));
    a.error_string = reinterpret_cast<decltype(a.error_string)>(dlsym(handle, "ncclGetErrorString"));
    if (!a.comm_init_all || !a.comm_destroy || !a.all_reduce || !a.error_string) {
      a.error = absl::StrCat(file, " lacks the NCCL functions lensd uses");
    }
    return a;
  }();
  return api;
}

void CheckNccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  spdlog::critical("NCCL error in {}: {}", what, Nccl().error_string(r));
  std::abort();  // a failed collective leaves the ranks out of step: unrecoverable
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::vector<int> devices, std::vector<ncclComm_t> comms,
                   std::vector<cuda::StreamPtr> streams)
      : devices_(std::move(devices)), comms_(std::move(comms)), streams_(std::move(streams)),
        host_(MakeThreadCommunicator(static_cast<int>(devices_.size()))) {}
  ~NcclCommunicator() override {
    for (ncclComm_t c : comms_) Nccl().comm_destroy(c);
  }
  int size() const override { return static_cast<int>(devices_.size()); }

  void AllReduceSum(int rank, TensorView x, Backend& backend) override {
    backend.Synchronize();  // x is complete on the backend's stream
    cudaSetDevice(devices_[rank]);
    CheckNccl(Nccl().all_reduce(x.data, x.data, static_cast<size_t>(x.NumElements()), ncclFloat32,
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
  const NcclApi& nccl = Nccl();
  if (!nccl.error.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        nccl.error, ": tensor parallelism across distinct GPUs needs it (install NCCL 2, or set "
        "LENSD_NCCL_LIBRARY to its libnccl.so.2)"));
  }
  std::vector<ncclComm_t> comms(devices.size());
  const ncclResult_t r = nccl.comm_init_all(comms.data(), static_cast<int>(devices.size()), devices.data());
  if (r != ncclSuccess) {
    return absl::InternalError(absl::StrCat("ncclCommInitAll: ", nccl.error_string(r)));
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
