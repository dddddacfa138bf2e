// The cost of interventions: RunWithCache on a GPT-2-small-shaped random model (12 layers,
// d 768), two prompts of 64 tokens, capturing every layer's resid_post, plain vs. with 16
// interventions of mixed ops (zero, scale, set, add, patch, project, sae_clamp, noise) spread
// over the layers. Run (interleaved, so machine noise hits both alike):
//   build/bench/intervention_bench --benchmark_enable_random_interleaving=true
//     --benchmark_repetitions=8 --benchmark_min_time=1 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>

#include "bench/bench_model.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"

namespace lensd {
namespace {

std::vector<std::vector<int32_t>> Prompts() {
  std::vector<std::vector<int32_t>> p(2, std::vector<int32_t>(64));
  for (int i = 0; i < 64; ++i) p[0][i] = (i * 7919) % 50257, p[1][i] = (i * 104729) % 50257;
  return p;
}

FloatTensor Vector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  FloatTensor t{{n}, {}};
  for (int64_t i = 0; i < n; ++i) t.data.push_back(d(rng));
  return t;
}

std::vector<Intervention> Mixed(const ModelConfig& c) {
  std::vector<Intervention> list;
  auto at = [&](HookPoint p, int layer, InterventionOp op) -> Intervention& {
    list.emplace_back();
    list.back().hook = {p, layer}, list.back().op = op;
    return list.back();
  };
  for (int l : {0, 6}) at(HookPoint::kZ, l, InterventionOp::kZero).heads = {1, 5};
  for (int l : {1, 7}) at(HookPoint::kMlpPost, l, InterventionOp::kScale).factor = 0.5f;
  for (int l : {2, 8}) at(HookPoint::kResidPre, l, InterventionOp::kAdd).value = Vector(c.d_model, l);
  for (int l : {3, 9}) at(HookPoint::kResidPost, l, InterventionOp::kProject).value = Vector(c.d_model, l);
  for (int l : {4, 10}) {
    Intervention& s = at(HookPoint::kResidPost, l, InterventionOp::kSaeClamp);
    s.value = Vector(c.d_model, 100 + l), s.decoder = Vector(c.d_model, 200 + l), s.target = 1;
  }
  for (int l : {5, 11}) at(HookPoint::kResidMid, l, InterventionOp::kPatch).source = 0;
  for (int l : {2, 8}) {
    Intervention& n = at(HookPoint::kMlpOut, l, InterventionOp::kNoise);
    n.std = 0.1f, n.seed = l;
  }
  for (int l : {5, 11}) {
    Intervention& s = at(HookPoint::kAttnOut, l, InterventionOp::kSet);
    s.value = Vector(c.d_model, 300 + l);
    s.positions.kind = PositionSelector::Kind::kIndices, s.positions.indices = {-1};
  }
  return list;
}

void BM_RunWithCache(benchmark::State& state) {
  Model& m = Gpt2SmallModel(static_cast<int>(state.range(0)));
  const ModelConfig& c = m.config();
  const auto prompts = Prompts();
  const HookSelection hooks = HookSelection::Parse(c, {"blocks.*.hook_resid_post"}).value();
  std::shared_ptr<const InterventionSet> set;
  if (state.range(1) > 0) set = InterventionSet::Create(c, Mixed(c), {64, 64}, false, 0).value();
  for (auto _ : state) {
    auto r = RunWithCache(m, prompts, hooks, set.get());
    if (!r.ok()) state.SkipWithError(std::string(r.status().message()).c_str());
    benchmark::DoNotOptimize(r);
  }
  state.counters["interventions"] = set ? static_cast<double>(set->list().size()) : 0;
  state.counters["prompt_tok/s"] = benchmark::Counter(128, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_RunWithCache)->ArgNames({"threads", "ops"})->Args({1, 0})->Args({1, 16})
    ->Args({2, 0})->Args({2, 16})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace
}  // namespace lensd

BENCHMARK_MAIN();
