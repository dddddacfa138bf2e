// The elementwise and attention kernels: scalar and AVX2 give the same bits, and both are
// close to the exact functions.
#include "engine/cpu/vec_ops.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tests/test_util.h"

namespace lensd {
namespace {

std::vector<float> Inputs(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  v[0] = 0.0f, v[1] = -0.0f, v[2] = 90.0f, v[3] = -90.0f, v[4] = 1e-30f;
  return v;
}

double Exact(int kind, double x) {
  switch (kind) {
    case 0: return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    case 1: return 0.5 * x * (1 + std::erf(x * 0.7071067811865476));
    case 2: return x / (1 + std::exp(-x));
    default: return x > 0 ? x : 0;
  }
}

TEST(VecOps, ActivationsAreCloseToExactAndTheSameOnEveryLevel) {
  const std::vector<float> x = Inputs(1003, 3.0f, 1), up = Inputs(1003, 1.0f, 2);
  for (int kind = 0; kind < 4; ++kind) {
    std::vector<float> scalar(x.size()), gated(x.size());
    ScalarVecOps().activation(kind, x.data(), nullptr, scalar.data(), x.size());
    ScalarVecOps().activation(kind, x.data(), up.data(), gated.data(), x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double want = Exact(kind, x[i]);
      ASSERT_NEAR(scalar[i], want, 2e-6 * std::max(1.0, std::fabs(want))) << kind << " x=" << x[i];
      ASSERT_EQ(gated[i], scalar[i] * up[i]);
    }
    if (DetectSimdLevel() < SimdLevel::kAvx2) continue;
    std::vector<float> avx2(x.size());
    Avx2VecOps().activation(kind, x.data(), nullptr, avx2.data(), x.size());
    ASSERT_EQ(std::memcmp(avx2.data(), scalar.data(), x.size() * 4), 0) << "kind " << kind;
  }
}

TEST(VecOps, DotAxpyAndSoftmaxPartsAreTheSameOnEveryLevel) {
  if (DetectSimdLevel() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2: one level only";
  for (int64_t n : {1, 7, 8, 9, 64, 129}) {
    const std::vector<float> a = Inputs(n + 5, 1.0f, 3), b = Inputs(n + 5, 1.0f, 4);
    EXPECT_EQ(ScalarVecOps().dot(a.data() + 5, b.data() + 5, n),
              Avx2VecOps().dot(a.data() + 5, b.data() + 5, n)) << n;
    std::vector<float> y1 = b, y2 = b;
    ScalarVecOps().axpy(0.37f, a.data(), y1.data(), n);
    Avx2VecOps().axpy(0.37f, a.data(), y2.data(), n);
    EXPECT_EQ(y1, y2);
    std::vector<float> p1 = a, p2 = a;
    p1[0] = p2[0] = -std::numeric_limits<float>::infinity();
    const float s1 = ScalarVecOps().exp_shift_sum(p1.data(), 1.5f, n);
    const float s2 = Avx2VecOps().exp_shift_sum(p2.data(), 1.5f, n);
    EXPECT_EQ(s1, s2);
    EXPECT_EQ(p1, p2);
    EXPECT_EQ(p1[0], 0.0f);
    if (n > 1) EXPECT_NEAR(p1[1], std::exp(a[1] - 1.5), 1e-6 * std::exp(a[1] - 1.5));
  }
}

TEST(VecOps, WidenIsExactOnEveryLevel) {
  // Every 16-bit pattern (NaNs, infinities, denormals included), then a tail shorter than 8.
  std::vector<uint16_t> bits(65536 + 5);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(i * 40503u);
  for (bool f16 : {false, true}) {
    std::vector<float> want(bits.size());
    ConvertToF32(f16 ? DType::kF16 : DType::kBF16, bits.data(), want.data(), bits.size());
    for (const VecOps* ops : {&ScalarVecOps(), &Avx2VecOps()}) {
      if (ops != &ScalarVecOps() && DetectSimdLevel() < SimdLevel::kAvx2) continue;
      std::vector<float> got(bits.size(), -1.0f);
      ops->widen(f16, bits.data(), got.data(), static_cast<int64_t>(bits.size()));
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << (f16 ? "f16" : "bf16");
    }
  }
}

}  // namespace
}  // namespace lensd
