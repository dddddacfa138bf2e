// The fixture of the gpu op tests: a CpuBackend and a CudaBackend on cuda:0, the same random
// tensors on both, and the comparison. Skips without a CUDA device.
#ifndef LENSD_TESTS_CUDA_OP_TEST_H_
#define LENSD_TESTS_CUDA_OP_TEST_H_

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "tests/test_util.h"

namespace lensd {

#define LENSD_REQUIRE_GPU() \
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device"

class OpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    cpu_ = MakeCpuBackend(0);
    gpu_ = std::move(MakeCudaBackend(0)).value();
  }
  // The same random tensor on both backends.
  std::pair<Buffer, Buffer> Random(Shape s, float scale = 1.0f) {
    std::vector<float> host(static_cast<size_t>(s.NumElements()));
    std::normal_distribution<float> dist(0.0f, scale);
    for (float& v : host) v = dist(rng_);
    Buffer c = *cpu_->Allocate(DType::kF32, s), g = *gpu_->Allocate(DType::kF32, s);
    cpu_->Upload(host.data(), c.view());
    gpu_->Upload(host.data(), g.view());
    return {std::move(c), std::move(g)};
  }
  // A weight matrix for Linear on both backends (AllocateMatrix + UploadMatrix).
  std::pair<Buffer, Buffer> RandomMatrix(Shape s, float scale, DType dtype = DType::kF32) {
    std::vector<float> host(static_cast<size_t>(s.NumElements()));
    std::normal_distribution<float> dist(0.0f, scale);
    for (float& v : host) v = dist(rng_);
    Buffer c = *cpu_->AllocateMatrix(dtype, s), g = *gpu_->AllocateMatrix(dtype, s);
    cpu_->UploadMatrix(host.data(), c.view());
    gpu_->UploadMatrix(host.data(), g.view());
    return {std::move(c), std::move(g)};
  }
  std::pair<Buffer, Buffer> Zeros(Shape s) {
    return {*cpu_->Allocate(DType::kF32, s), *gpu_->Allocate(DType::kF32, s)};
  }
  ::testing::AssertionResult Same(const std::string& what, const std::pair<Buffer, Buffer>& t,
                                  double tol = 1e-5) {
    Buffer host = Buffer::Host(DType::kF32, t.second.shape());
    gpu_->Download(t.second.view(), host.As<float>());
    return testing::AllClose(what, host.view(), t.first.view(), tol);
  }
  std::unique_ptr<Backend> cpu_, gpu_;
  std::mt19937 rng_{7};
};

}  // namespace lensd

#endif  // LENSD_TESTS_CUDA_OP_TEST_H_
