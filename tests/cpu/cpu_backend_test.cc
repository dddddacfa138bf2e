// CpuBackend with bfloat16 / float16 weight matrices computes exactly what a float32 GEMM
// computes on inputs and weights rounded to that dtype (the GPU's semantics, which the CUDA
// tests compare against), independently of the batch a row runs in.
#include "engine/cpu/cpu_backend.h"

#include <cstring>
#include <random>
#include <vector>

#include "tests/test_util.h"

namespace lensd {
namespace {

std::vector<float> RandomVector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> Rounded(const std::vector<float>& v, DType dtype) {
  std::vector<uint16_t> narrow(v.size());
  std::vector<float> out(v.size());
  ConvertFromF32(v.data(), dtype, narrow.data(), v.size());
  ConvertToF32(dtype, narrow.data(), out.data(), v.size());
  return out;
}

TEST(CpuBackend, NarrowWeightsEqualFloat32OnRoundedInputs) {
  auto cpu = MakeCpuBackend(0);
  std::mt19937 rng(3);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (auto [t, n, k] : {std::tuple{1, 300, 64}, {13, 129, 40}, {40, 256, 96}}) {
      const std::vector<float> x = RandomVector(size_t(t) * k, rng),
                               w = RandomVector(size_t(n) * k, rng);
      const std::vector<float> b = RandomVector(n, rng);
      Buffer wn = *cpu->Allocate(dtype, {n, k}), wf = *cpu->Allocate(DType::kF32, {n, k});
      cpu->Upload(w.data(), wn.view());
      const std::vector<float> wr = Rounded(w, dtype);
      cpu->Upload(wr.data(), wf.view());
      std::vector<float> xr = Rounded(x, dtype);
      Buffer bias = *cpu->Allocate(DType::kF32, {n});
      cpu->Upload(b.data(), bias.view());
      Buffer got = *cpu->Allocate(DType::kF32, {t, n}), want = *cpu->Allocate(DType::kF32, {t, n});
      TensorView xv{const_cast<float*>(x.data()), DType::kF32, {t, k}};
      TensorView xrv{xr.data(), DType::kF32, {t, k}};
      cpu->Linear(xv, wn.view(), bias.view(), got.view());
      cpu->Linear(xrv, wf.view(), bias.view(), want.view());
      EXPECT_TRUE(testing::AllClose("linear", got.view(), want.view(), 0)) << DTypeName(dtype);
      // The first row alone gives the same bits as in the batch.
      Buffer one = *cpu->Allocate(DType::kF32, {1, n});
      cpu->Linear(xv.Rows(0, 1), wn.view(), bias.view(), one.view());
      EXPECT_EQ(0, std::memcmp(one.As<void>(), got.As<void>(), n * sizeof(float)));
    }
    // Embedding rows are widened exactly.
    const std::vector<float> table = RandomVector(50 * 8, rng);
    Buffer tn = *cpu->Allocate(dtype, {50, 8});
    cpu->Upload(table.data(), tn.view());
    Buffer rows = *cpu->Allocate(DType::kF32, {2, 8});
    const int32_t ids[] = {49, 3};
    cpu->Gather(tn.view(), ids, rows.view());
    const std::vector<float> tr = Rounded(table, dtype);
    EXPECT_EQ(0, std::memcmp(rows.As<float>(), tr.data() + 49 * 8, 8 * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(rows.As<float>() + 8, tr.data() + 3 * 8, 8 * sizeof(float)));
  }
}

}  // namespace
}  // namespace lensd
