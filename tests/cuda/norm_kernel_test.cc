// gpu: the CUDA norm kernel against CpuBackend::Norm on random inputs (skips without a GPU).
#include <cstring>
#include <random>

#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_handles.h"
#include "engine/cuda/kernels/norm.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

cuda::DevicePtr ToDevice(const Buffer& host) {
  auto d = cuda::DeviceAlloc(host.NumBytes());
  EXPECT_TRUE(d.ok()) << d.status();
  cudaMemcpy(d->get(), host.As<float>(), host.NumBytes(), cudaMemcpyHostToDevice);
  return std::move(*d);
}

Buffer ToHost(const cuda::DevicePtr& device, Shape shape) {
  Buffer host = Buffer::Host(DType::kF32, shape);
  cudaMemcpy(host.As<float>(), device.get(), host.NumBytes(), cudaMemcpyDeviceToHost);
  return host;
}

float* F(const cuda::DevicePtr& p) { return static_cast<float*>(p.get()); }

TEST(CudaNorm, MatchesCpuBackend) {
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto cpu = MakeCpuBackend(0);
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.5f, 2.0f);
  for (auto [rows, d] : {std::pair{1, 64}, {7, 768}, {33, 4096}, {5, 100}}) {
    for (bool layer_norm : {true, false}) {
      Buffer x = Buffer::Host(DType::kF32, {rows, d}), w = Buffer::Host(DType::kF32, {d});
      Buffer b = Buffer::Host(DType::kF32, {d});
      for (Buffer* t : {&x, &w, &b}) {
        for (int64_t i = 0; i < t->shape().NumElements(); ++i) t->As<float>()[i] = dist(rng);
      }
      Buffer y = Buffer::Host(DType::kF32, {rows, d}), n = Buffer::Host(DType::kF32, {rows, d});
      Buffer s = Buffer::Host(DType::kF32, {rows});
      cpu->Norm(layer_norm ? NormKind::kLayerNorm : NormKind::kRmsNorm, x.view(), w.view(),
                b.view(), 1e-5f, y.view(), n.view(), s.view());
      cuda::DevicePtr dx = ToDevice(x), dw = ToDevice(w), db = ToDevice(b);
      // Outputs start poisoned (0xff bytes = NaN): every element must be written.
      Buffer poison = Buffer::Host(DType::kF32, {rows, d});
      Buffer poison_rows = Buffer::Host(DType::kF32, {rows});
      std::memset(poison.As<float>(), 0xff, poison.NumBytes());
      std::memset(poison_rows.As<float>(), 0xff, poison_rows.NumBytes());
      cuda::DevicePtr dy = ToDevice(poison), dn = ToDevice(poison), ds = ToDevice(poison_rows);
      ASSERT_EQ(cudaSuccess, cuda::LaunchNorm<float>(layer_norm, F(dx), F(dw), F(db), 1e-5f, rows,
                                                     d, F(dy), F(dn), F(ds), nullptr));
      ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
      EXPECT_TRUE(testing::AllClose("y", ToHost(dy, {rows, d}).view(), y.view(), 1e-5));
      EXPECT_TRUE(testing::AllClose("normalized", ToHost(dn, {rows, d}).view(), n.view(), 1e-5));
      EXPECT_TRUE(testing::AllClose("scale", ToHost(ds, {rows}).view(), s.view(), 1e-5));
    }
  }
}

}  // namespace
}  // namespace lensd
