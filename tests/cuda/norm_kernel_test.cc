// gpu: the CUDA norm kernel against CpuBackend::Norm on random inputs (skips without a GPU).
#include <random>

#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_handles.h"
#include "engine/cuda/kernels/norm.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

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
      const size_t xb = x.NumBytes(), db = w.NumBytes(), sb = s.NumBytes();
      auto dx = cuda::DeviceAlloc(xb), dw = cuda::DeviceAlloc(db), dbias = cuda::DeviceAlloc(db);
      auto dy = cuda::DeviceAlloc(xb), dn = cuda::DeviceAlloc(xb), ds = cuda::DeviceAlloc(sb);
      ASSERT_TRUE(dx.ok() && dw.ok() && dbias.ok() && dy.ok() && dn.ok() && ds.ok());
      cudaMemcpy(dx->get(), x.As<float>(), xb, cudaMemcpyHostToDevice);
      cudaMemcpy(dw->get(), w.As<float>(), db, cudaMemcpyHostToDevice);
      cudaMemcpy(dbias->get(), b.As<float>(), db, cudaMemcpyHostToDevice);
      cudaMemset(dy->get(), 0xff, xb);  // poison: every element must be written
      ASSERT_EQ(cudaSuccess, cuda::LaunchNorm<float>(layer_norm, static_cast<float*>(dx->get()),
                                                     static_cast<float*>(dw->get()),
                                                     static_cast<float*>(dbias->get()), 1e-5f, rows, d,
                                                     static_cast<float*>(dy->get()),
                                                     static_cast<float*>(dn->get()),
                                                     static_cast<float*>(ds->get()), nullptr));
      ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
      Buffer gy = Buffer::Host(DType::kF32, {rows, d}), gn = Buffer::Host(DType::kF32, {rows, d});
      Buffer gs = Buffer::Host(DType::kF32, {rows});
      cudaMemcpy(gy.As<float>(), dy->get(), xb, cudaMemcpyDeviceToHost);
      cudaMemcpy(gn.As<float>(), dn->get(), xb, cudaMemcpyDeviceToHost);
      cudaMemcpy(gs.As<float>(), ds->get(), sb, cudaMemcpyDeviceToHost);
      EXPECT_TRUE(testing::AllClose("y", gy.view(), y.view(), 1e-5));
      EXPECT_TRUE(testing::AllClose("normalized", gn.view(), n.view(), 1e-5));
      EXPECT_TRUE(testing::AllClose("scale", gs.view(), s.view(), 1e-5));
    }
  }
}

}  // namespace
}  // namespace lensd
