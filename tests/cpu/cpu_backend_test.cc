// CpuBackend with bfloat16 / float16 weight matrices computes what a float32 GEMM computes on
// inputs and weights rounded to that dtype (the GPU's semantics, which the CUDA tests compare
// against): float16 exactly (the same fused chain over k), bfloat16 to accumulation order
// (its pairs accumulate odd then even, as vdpbf16ps does); independently of the batch.
#include "engine/cpu/cpu_backend.h"

#include <cmath>
#include <cstring>
#include <limits>
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
      Buffer wn = *cpu->AllocateMatrix(dtype, {n, k}), wf = *cpu->AllocateMatrix(DType::kF32, {n, k});
      cpu->UploadMatrix(w.data(), wn.view());
      const std::vector<float> wr = Rounded(w, dtype);
      cpu->UploadMatrix(wr.data(), wf.view());
      std::vector<float> xr = Rounded(x, dtype);
      Buffer bias = *cpu->Allocate(DType::kF32, {n});
      cpu->Upload(b.data(), bias.view());
      Buffer got = *cpu->Allocate(DType::kF32, {t, n}), want = *cpu->Allocate(DType::kF32, {t, n});
      TensorView xv{const_cast<float*>(x.data()), DType::kF32, {t, k}};
      TensorView xrv{xr.data(), DType::kF32, {t, k}};
      cpu->Linear(xv, wn.view(), bias.view(), got.view());
      cpu->Linear(xrv, wf.view(), bias.view(), want.view());
      EXPECT_TRUE(testing::AllClose("linear", got.view(), want.view(),
                                    dtype == DType::kF16 ? 0 : 1e-5))
          << DTypeName(dtype);
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

// A bfloat16 / float16 KV pool holds K and V rounded once, when written: attention over it is
// attention over a float32 pool of the rounded values, bit for bit.
TEST(CpuBackend, NarrowKvPoolEqualsFloat32PoolOfRoundedValues) {
  auto cpu = MakeCpuBackend(0);
  std::mt19937 rng(5);
  const int T = 20, H = 4, Hkv = 2, dh = 16, bs = 4;
  const std::vector<float> k = RandomVector(size_t(T) * Hkv * dh, rng);
  const std::vector<float> v = RandomVector(k.size(), rng), q = RandomVector(size_t(T) * H * dh, rng);
  std::vector<int32_t> table = {4, 0, 3, 1, 2}, slots;
  for (int p = 0; p < T; ++p) slots.push_back(table[p / bs] * bs + p % bs);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    auto attend = [&](DType pool_dtype, const std::vector<float>& kk, const std::vector<float>& vv) {
      Buffer kp = *cpu->Allocate(pool_dtype, {5 * bs, Hkv, dh}), vp = *cpu->Allocate(pool_dtype, {5 * bs, Hkv, dh});
      KvLayerView kv{kp.view(), vp.view(), bs};
      cpu->WriteKv({const_cast<float*>(kk.data()), DType::kF32, {T, Hkv, dh}},
                   {const_cast<float*>(vv.data()), DType::kF32, {T, Hkv, dh}}, slots.data(), kv);
      Buffer z = *cpu->Allocate(DType::kF32, {T, H, dh});
      std::vector<AttentionSeq> seqs = {{0, 12, 0, table.data(), {}, {}}, {12, 8, 12, table.data(), {}, {}}};
      cpu->Attention({const_cast<float*>(q.data()), DType::kF32, {T, H, dh}}, kv, seqs, {0.25f, 0}, z.view());
      return z;
    };
    Buffer narrow = attend(dtype, k, v), wide = attend(DType::kF32, Rounded(k, dtype), Rounded(v, dtype));
    EXPECT_TRUE(testing::AllClose("z", narrow.view(), wide.view(), 0)) << DTypeName(dtype);
  }
}

// A query whose every key is masked (interventions may give such scores) attends to nothing:
// pattern 0 and z 0, never NaN; the other rows are unaffected.
TEST(CpuBackend, FullyMaskedScoreRowGivesZeroPatternAndZ) {
  auto cpu = MakeCpuBackend(0);
  std::mt19937 rng(9);
  const int T = 3, H = 2, dh = 8, bs = 4;
  const std::vector<float> k = RandomVector(size_t(T) * dh, rng), v = RandomVector(k.size(), rng);
  std::vector<int32_t> table = {0}, slots = {0, 1, 2};
  Buffer kp = *cpu->Allocate(DType::kF32, {bs, 1, dh}), vp = *cpu->Allocate(DType::kF32, {bs, 1, dh});
  KvLayerView kv{kp.view(), vp.view(), bs};
  cpu->WriteKv({const_cast<float*>(k.data()), DType::kF32, {T, 1, dh}},
               {const_cast<float*>(v.data()), DType::kF32, {T, 1, dh}}, slots.data(), kv);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> scores(size_t(H) * T * T, -inf);
  for (int h = 0; h < H; ++h) {
    for (int i = 0; i < T; ++i) {
      for (int j = 0; j <= i; ++j) scores[(h * T + i) * T + j] = 0.5f * (j + 1);
    }
  }
  for (int j = 0; j < T; ++j) scores[(1 * T + 2) * T + j] = -inf;  // head 1, query 2: nothing
  Buffer pattern = *cpu->Allocate(DType::kF32, {H, T, T}), z = *cpu->Allocate(DType::kF32, {T, H, dh});
  AttentionSeq seq{0, T, 0, table.data(), {scores.data(), DType::kF32, {H, T, T}}, pattern.view(),
                   AttentionSeq::Input::kScores};
  std::vector<float> q(size_t(T) * H * dh, 1.0f);
  cpu->Attention({q.data(), DType::kF32, {T, H, dh}}, kv, {seq}, {1.0f, 0}, z.view());
  for (int j = 0; j < T; ++j) EXPECT_EQ(pattern.As<float>()[(1 * T + 2) * T + j], 0.0f);
  for (int d = 0; d < dh; ++d) EXPECT_EQ(z.As<float>()[(2 * H + 1) * dh + d], 0.0f);
  // Head 0 of the same query still attends: its pattern row sums to 1.
  float sum = 0;
  for (int j = 0; j < T; ++j) sum += pattern.As<float>()[(0 * T + 2) * T + j];
  EXPECT_NEAR(sum, 1.0f, 1e-6);
  for (float x : std::vector<float>(z.As<float>(), z.As<float>() + T * H * dh)) {
    EXPECT_FALSE(std::isnan(x));
  }
}

}  // namespace
}  // namespace lensd
