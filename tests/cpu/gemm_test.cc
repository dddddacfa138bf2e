// The CPU GEMM kernels: every instruction-set level this CPU has gives the bits of the
// definition in gemm.h (one fused chain per output over k from 0; bfloat16 pairs odd then
// even under FTZ/DAZ), and a row's result never depends on its batch, its place in it, the
// panel split between threads, or the thread count.
#include "engine/cpu/gemm.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

std::vector<SimdLevel> Levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (l <= DetectSimdLevel()) out.push_back(l);
  }
  return out;
}

float Round(float v, DType dtype) {
  uint32_t narrow;  // room for any dtype's element, float32 included
  float out;
  ConvertFromF32(&v, dtype, &narrow, 1);
  ConvertToF32(dtype, &narrow, &out, 1);
  return out;
}

float Flush(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }

// y[t][n] by the definition, from unpacked weights.
float Definition(const std::vector<float>& x, const std::vector<float>& w, int64_t K, int64_t t,
                 int64_t n, DType dtype, float bias) {
  float acc = 0;
  if (dtype != DType::kBF16) {
    for (int64_t k = 0; k < K; ++k) acc = std::fma(x[t * K + k], Round(w[n * K + k], dtype), acc);
    return acc + bias;
  }
  auto fma = [](float a, float b, float c) { return Flush(std::fma(Flush(a), Flush(b), Flush(c))); };
  for (int64_t k = 0; k < K; k += 2) {
    const float xo = k + 1 < K ? x[t * K + k + 1] : 0.0f, wo = k + 1 < K ? w[n * K + k + 1] : 0.0f;
    acc = fma(xo, Round(wo, dtype), acc);
    acc = fma(x[t * K + k], Round(w[n * K + k], dtype), acc);
  }
  return Flush(Flush(acc) + Flush(bias));
}

struct Problem {
  int64_t T, N, K;
  DType dtype;
  std::vector<float> x, w, bias, packed_x;
  std::vector<char> packed;

  Problem(int64_t t, int64_t n, int64_t k, DType d, uint32_t seed) : T(t), N(n), K(k), dtype(d) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0, 1);
    for (int64_t i = 0; i < T * K; ++i) x.push_back(dtype == DType::kF32 ? dist(rng) : Round(dist(rng), dtype));
    for (int64_t i = 0; i < N * K; ++i) w.push_back(dist(rng) * 0.1f);
    for (int64_t i = 0; i < N; ++i) bias.push_back(dist(rng));
    // Tiny values exercise the flushing of bfloat16 denormals.
    if (dtype == DType::kBF16) x[0] = 1e-39f, w[1] = 3e-39f;
    packed.resize(static_cast<size_t>(PackedBytes(dtype, N, K)) + 64);
    PackMatrix(w.data(), N, K, dtype, Aligned());
    const int64_t kp = PackedK(dtype, K);
    packed_x.assign(static_cast<size_t>(T * kp), 0.0f);
    for (int64_t r = 0; r < T; ++r) std::copy_n(&x[r * K], K, &packed_x[r * kp]);
  }
  void* Aligned() { return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(packed.data()) + 63) / 64 * 64); }
  // Rows [t0, t0 + rows) through panels [p0, p1) at `level` into y (all N columns written by
  // the panels given).
  void Run(int64_t t0, int64_t rows, int64_t p0, int64_t p1, SimdLevel level, std::vector<float>& y) {
    GemmProblem g;
    g.dtype = dtype, g.k = PackedK(dtype, K), g.n = N, g.w = Aligned();
    g.x = packed_x.data() + t0 * g.k, g.ldx = g.k, g.T = rows;
    g.bias = bias.data(), g.y = y.data();
    GemmPanels(g, p0, p1, level);
  }
  int64_t Panels() const { return (N + kPanel - 1) / kPanel; }
};

class GemmTest : public ::testing::TestWithParam<DType> {};

TEST_P(GemmTest, EveryLevelGivesTheDefinitionsBits) {
  // K = 600: several blocks of k (256), partial sums carried in y between them.
  for (auto [t, n, k] : {std::tuple{1, 77, 64}, {7, 130, 33}, {13, 64, 200}, {40, 50, 96}, {9, 40, 600}}) {
    Problem pr(t, n, k, GetParam(), static_cast<uint32_t>(t * 31 + n));
    for (SimdLevel level : Levels()) {
      std::vector<float> y(static_cast<size_t>(t * n), -1.0f);
      pr.Run(0, t, 0, pr.Panels(), level, y);
      for (int64_t r = 0; r < t; ++r) {
        for (int64_t c = 0; c < n; ++c) {
          const float want = Definition(pr.x, pr.w, k, r, c, pr.dtype, pr.bias[c]);
          ASSERT_EQ(std::memcmp(&y[r * n + c], &want, 4), 0)
              << SimdLevelName(level) << " " << DTypeName(pr.dtype) << " T=" << t << " N=" << n
              << " K=" << k << " row " << r << " col " << c << ": " << y[r * n + c] << " vs " << want;
        }
      }
    }
  }
}

TEST_P(GemmTest, RowsDoNotDependOnBatchPlaceOrPanelSplit) {
  for (int64_t T : {8, 13, 128}) {
    Problem pr(T, 100, 128, GetParam(), static_cast<uint32_t>(T));
    for (SimdLevel level : Levels()) {
      std::vector<float> all(static_cast<size_t>(T * pr.N));
      pr.Run(0, T, 0, pr.Panels(), level, all);
      for (int64_t first : {int64_t{0}, T / 2, T - 1}) {
        for (int64_t rows : {int64_t{1}, std::min<int64_t>(5, T - first)}) {
          std::vector<float> part(static_cast<size_t>(rows * pr.N));
          // A different split of the panels (as another thread count gives).
          pr.Run(first, rows, 0, 3, level, part);
          pr.Run(first, rows, 3, pr.Panels(), level, part);
          ASSERT_EQ(std::memcmp(part.data(), &all[first * pr.N], part.size() * 4), 0)
              << SimdLevelName(level) << " T=" << T << " rows " << first << "+" << rows;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, GemmTest, ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// Through the backend: one thread and two give the same bits; Linear at T=1 equals the row
// inside T=512.
TEST(CpuLinear, ThreadCountAndBatchDoNotChangeBits) {
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0, 1);
  const int64_t T = 512, N = 300, K = 96;
  std::vector<float> x(T * K), w(N * K);
  for (float& v : x) v = dist(rng);
  for (float& v : w) v = dist(rng);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2}) {
      auto cpu = MakeCpuBackend(0, threads);
      Buffer m = *cpu->AllocateMatrix(dtype, {N, K});
      cpu->UploadMatrix(w.data(), m.view());
      std::vector<float> y(T * N), one(N);
      cpu->Linear({x.data(), DType::kF32, {T, K}}, m.view(), {}, {y.data(), DType::kF32, {T, N}});
      cpu->Linear({x.data() + 300 * K, DType::kF32, {1, K}}, m.view(), {}, {one.data(), DType::kF32, {1, N}});
      EXPECT_EQ(std::memcmp(one.data(), &y[300 * N], N * 4), 0) << DTypeName(dtype);
      results.push_back(y);
    }
    EXPECT_EQ(results[0], results[1]) << DTypeName(dtype);
  }
}

}  // namespace
}  // namespace lensd
