// The CPU GEMM kernels alone (GPT-2-small shapes), per instruction-set level and row count:
// GFLOP/s of y[T, N] = x[T, K] · Wᵀ. Run: build/bench/gemm_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "engine/cpu/gemm.h"

namespace lensd {
namespace {

void BM_Gemm(benchmark::State& state) {
  const auto level = static_cast<SimdLevel>(state.range(0));
  const auto dtype = static_cast<DType>(state.range(1));
  const int64_t T = state.range(2), N = state.range(3), K = state.range(4);
  if (level > DetectSimdLevel()) return state.SkipWithError("level not supported here");
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> w(N * K), x(T * PackedK(dtype, K)), y(T * N);
  for (float& v : w) v = d(rng);
  for (float& v : x) v = d(rng);
  std::vector<char> packed(PackedBytes(dtype, N, K) + 64);
  void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(packed.data()) + 63) / 64 * 64);
  PackMatrix(w.data(), N, K, dtype, aligned);
  GemmProblem g;
  g.x = x.data(), g.T = T, g.ldx = PackedK(dtype, K), g.w = aligned, g.dtype = dtype;
  g.k = PackedK(dtype, K), g.n = N, g.y = y.data();
  for (auto _ : state) {
    GemmPanels(g, 0, (N + kPanel - 1) / kPanel, level);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * T * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(SimdLevelName(level) + " " + std::string(DTypeName(dtype)));
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int level : {0, 1, 2}) {
    for (int dtype : {static_cast<int>(DType::kF32), static_cast<int>(DType::kBF16)}) {
      for (auto [t, n, k] : {std::tuple{128, 768, 768}, {128, 3072, 768}, {128, 768, 3072},
                             {1, 3072, 768}, {1, 768, 3072}}) {
        if (level == 0 && t > 1) continue;  // the scalar fallback is for correctness
        b->Args({level, dtype, t, n, k});
      }
    }
  }
}

BENCHMARK(BM_Gemm)->ArgNames({"level", "dtype", "T", "N", "K"})->Apply(Shapes)->MinTime(0.5)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lensd

BENCHMARK_MAIN();
