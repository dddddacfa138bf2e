// NCCL is opened lazily: without it, tensor parallelism across distinct GPUs is a clear error
// and nothing else is affected. Runs without a device (the library check comes first).
#include <cstdio>
#include <cstdlib>

#include "engine/cuda/nccl_communicator.h"
#include "gtest/gtest.h"

namespace lensd {
namespace {

// In a child process: NCCL is opened once per process, and the parent must keep the real one.
void ExpectClearErrorWithoutNccl() {
  setenv("LENSD_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
  auto comm = MakeNcclCommunicator({0, 1});
  const std::string message(comm.ok() ? "" : comm.status().message());
  const bool clear = !comm.ok() && comm.status().code() == absl::StatusCode::kFailedPrecondition &&
                     message.find("NCCL is not available") != std::string::npos &&
                     message.find("LENSD_NCCL_LIBRARY") != std::string::npos;
  std::fprintf(stderr, "status: %s\n", comm.ok() ? "OK" : comm.status().ToString().c_str());
  std::exit(clear ? 0 : 1);
}

TEST(Nccl, AnAbsentLibraryIsAClearErrorNotALinkFailure) {
  EXPECT_EXIT(ExpectClearErrorWithoutNccl(), ::testing::ExitedWithCode(0), "NCCL is not available");
}

}  // namespace
}  // namespace lensd
