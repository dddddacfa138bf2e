// CPU engine throughput on a GPT-2-small-shaped random model (12 layers, d 768, 12 heads,
// MLP 3072, vocab 50257): prompt (prefill) tokens/s and cached decode tokens/s, at 1 and 2
// threads. Run: build/bench/engine_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include "bench/bench_model.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"

namespace lensd {
namespace {

std::vector<int32_t> Prompt(int n) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = (i * 7919) % 50257;
  return ids;
}

void BM_Prefill(benchmark::State& state) {
  Model& m = Gpt2SmallModel(static_cast<int>(state.range(0)));
  const auto ids = Prompt(static_cast<int>(state.range(1)));
  std::vector<int32_t> table;
  m.blocks().Reserve(table, static_cast<int>(ids.size()));
  for (auto _ : state) {
    auto r = m.Forward({{ids, 0, &table, false}}, nullptr);
    benchmark::DoNotOptimize(r);
  }
  m.blocks().Release(table);
  state.counters["prompt_tok/s"] =
      benchmark::Counter(static_cast<double>(ids.size()), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Decode(benchmark::State& state) {
  Model& m = Gpt2SmallModel(static_cast<int>(state.range(0)));
  const auto ids = Prompt(64);
  std::vector<int32_t> table;
  m.blocks().Reserve(table, 1024);
  auto pre = m.Forward({{ids, 0, &table, false}}, nullptr);
  int pos = static_cast<int>(ids.size());
  for (auto _ : state) {
    if (pos >= 1000) pos = static_cast<int>(ids.size());  // stay inside the context
    auto r = m.Forward({{{42}, pos++, &table, false}}, nullptr);
    benchmark::DoNotOptimize(r);
  }
  m.blocks().Release(table);
  state.counters["decode_tok/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Prefill)->ArgNames({"threads", "prompt"})->Args({1, 128})->Args({2, 128})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Decode)->ArgNames({"threads"})->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)
    ->UseRealTime()->MinTime(2.0);

}  // namespace
}  // namespace lensd

BENCHMARK_MAIN();
