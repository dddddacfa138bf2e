// Interventions inside continuous batches: a request's results equal the same request run
// alone, whatever else shares its steps, under chunked prefill and preemption; prompts linked
// by patch run in one step even when the step budget would split them.
#include <cstring>
#include <random>

#include "engine/runtime/generate.h"
#include "server/scheduler.h"
#include "tests/server/recording_sink.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using Sink = testing::RecordingSink;


std::unique_ptr<Model> Builtin(int kv_tokens, int block_size = 16) {
  LoadOptions o;
  o.kv_tokens = kv_tokens;
  o.block_size = block_size;
  return *Model::Load(o);
}

std::vector<int32_t> Prompt(int i) {
  std::vector<int32_t> p = {1};
  for (int k = 0; k < 6 + (i * 5) % 17; ++k) p.push_back(3 + (i * 37 + k * 13) % 250);
  return p;
}

// A steering or ablation op that differs with `i` (hook, op, positions).
Intervention Steering(const ModelConfig& c, int i) {
  std::mt19937 rng(i);
  std::normal_distribution<float> d(0, 1);
  Intervention iv;
  iv.hook = {i % 2 ? HookPoint::kResidPre : HookPoint::kZ, i % c.n_layers};
  if (iv.hook.point == HookPoint::kZ) {
    iv.op = InterventionOp::kScale, iv.factor = -1.5f, iv.heads = {i % c.n_heads};
  } else {
    iv.op = InterventionOp::kAdd, iv.coeff = 2;
    iv.value.shape = {c.d_model};
    for (int k = 0; k < c.d_model; ++k) iv.value.data.push_back(d(rng));
  }
  using K = PositionSelector::Kind;
  iv.positions.kind = i % 3 == 0 ? K::kGenerated : K::kAll;
  return iv;
}

Job GenerateJob(const ModelConfig& c, int i, std::shared_ptr<JobSink> sink) {
  Job job;
  job.prompts = {Prompt(i)};
  job.sampling.max_new_tokens = 12;
  job.sampling.ignore_eos = true;
  if (i % 4 != 3) {  // every fourth job is plain traffic
    const int P = static_cast<int>(job.prompts[0].size());
    job.interventions = *InterventionSet::Create(c, {Steering(c, i)}, {P}, true, P + 12);
  }
  job.sink = std::move(sink);
  return job;
}

void ExpectAllBlocksFree(const Scheduler& s) {
  for (int i = 0; i < 200 && s.Counters().kv_blocks_free != s.Counters().kv_blocks_total; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(s.Counters().kv_blocks_free, s.Counters().kv_blocks_total);
}

TEST(SchedulerInterventions, GenerationEqualsAloneUnderChunkingAndPreemption) {
  // 8-token prefill chunks; 10 blocks of 8 tokens for 12 sequences of up to 35 tokens.
  auto model = Builtin(80, /*block_size=*/8);
  const ModelConfig& c = model->config();
  Scheduler scheduler(*model, {/*max_batch_tokens=*/8, /*max_running=*/64, /*max_queue=*/64});
  std::vector<std::shared_ptr<Sink>> sinks;
  for (int i = 0; i < 12; ++i) {
    sinks.push_back(std::make_shared<Sink>());
    ASSERT_TRUE(scheduler.Submit(GenerateJob(c, i, sinks.back())).ok());
  }
  auto alone = Builtin(4096);
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    ASSERT_TRUE(sinks[i]->status_.ok()) << sinks[i]->status_;
    Job job = GenerateJob(c, i, nullptr);
    auto ref = Generate(*alone, job.prompts[0], job.sampling, nullptr, job.interventions.get());
    ASSERT_TRUE(ref.ok()) << ref.status();
    EXPECT_EQ(sinks[i]->tokens_, ref->tokens) << "job " << i;
  }
  EXPECT_GT(scheduler.Counters().preemptions, 0);
  EXPECT_GT(scheduler.Counters().interventions[static_cast<int>(InterventionOp::kAdd)], 0);
  ExpectAllBlocksFree(scheduler);
}

TEST(SchedulerInterventions, PatchingPromptsRunTogetherAndEqualTheOfflineRun) {
  auto model = Builtin(4096);
  const ModelConfig& c = model->config();
  // A budget smaller than the prompts: without gang scheduling they would run apart.
  Scheduler scheduler(*model, {/*max_batch_tokens=*/4, 64, 64});
  const std::vector<std::vector<int32_t>> prompts = {Prompt(7), Prompt(7), Prompt(7)};
  std::vector<std::vector<int32_t>> corrupted = prompts;
  corrupted[1][3] = 99, corrupted[2][5] = 42;
  std::vector<Intervention> list(3);
  list[0].hook = {HookPoint::kResidPre, 2}, list[0].op = InterventionOp::kPatch, list[0].source = 0;
  list[1].hook = {HookPoint::kPattern, 1}, list[1].op = InterventionOp::kPatch, list[1].source = 0;
  list[1].prompts = {2}, list[1].heads = {1};
  list[2] = Steering(c, 1);
  list[2].positions.kind = PositionSelector::Kind::kAll;
  std::vector<int> lengths(3, static_cast<int>(prompts[0].size()));
  auto set = *InterventionSet::Create(c, list, lengths, false, 0);
  std::vector<std::shared_ptr<Sink>> traffic;
  for (int i = 0; i < 4; ++i) {
    traffic.push_back(std::make_shared<Sink>());
    ASSERT_TRUE(scheduler.Submit(GenerateJob(c, i, traffic.back())).ok());
  }
  auto cap = std::make_shared<Sink>();
  Job job;
  job.kind = Job::Kind::kCapture;
  job.prompts = corrupted;
  job.hooks = HookSelection::All(c);
  job.interventions = set;
  job.sink = cap;
  ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
  ASSERT_TRUE(cap->Wait());
  ASSERT_TRUE(cap->status_.ok()) << cap->status_;
  auto ref = RunWithCache(*Builtin(4096), corrupted, HookSelection::All(c), set.get());
  ASSERT_TRUE(ref.ok()) << ref.status();
  for (int p = 0; p < 3; ++p) {
    EXPECT_TRUE(testing::AllClose("logits", cap->tensors_.at({p, "logits"}).view(),
                                  (*ref)[p].logits.view(), 0));
    for (const auto& [name, buffer] : (*ref)[p].cache) {
      EXPECT_TRUE(testing::AllClose(name, cap->tensors_.at({p, name}).view(), buffer.view(), 0));
    }
  }
  for (auto& t : traffic) ASSERT_TRUE(t->Wait());
  ExpectAllBlocksFree(scheduler);
}

}  // namespace
}  // namespace lensd

namespace lensd {
namespace {

class CancellingSink : public Sink {
 public:
  explicit CancellingSink(int after) : after_(after) {}
  bool Cancelled() const override { return after_ >= 0 && tokens_.size() >= size_t(after_); }

 private:
  int after_;
};

// Requests sharing a 40-token system prompt (plain and steered), in a cache that forces
// preemptions and evictions, a third of them cancelled midway: every finished request equals
// its run alone, the cache served prompt tokens, and every block is free at the end.
TEST(SchedulerPrefixCache, SharedPrefixesUnderPressureStayExactAndLeakNothing) {
  auto model = Builtin(256, /*block_size=*/8);
  const ModelConfig& c = model->config();
  Scheduler scheduler(*model, {/*max_batch_tokens=*/16, 64, 64});
  std::vector<int32_t> system = {1};
  for (int k = 0; k < 40; ++k) system.push_back(3 + (k * 7) % 250);
  std::vector<std::shared_ptr<Sink>> sinks;
  std::vector<Job> jobs;
  for (int i = 0; i < 18; ++i) {
    Job job;
    job.prompts = {system};
    for (int k = 0; k <= i % 5; ++k) job.prompts[0].push_back(3 + (i * 13 + k) % 250);
    job.sampling.max_new_tokens = 10 + i % 7;
    job.sampling.ignore_eos = true;
    if (i % 4 == 1) {
      const int P = static_cast<int>(job.prompts[0].size());
      Intervention steer = Steering(c, i);
      steer.positions.kind = PositionSelector::Kind::kGenerated;  // the prompt stays plain
      job.interventions = *InterventionSet::Create(c, {steer}, {P}, true, P + 20);
    }
    jobs.push_back(job);
    sinks.push_back(i % 3 == 2 ? std::make_shared<CancellingSink>(4) : std::make_shared<Sink>());
    job.sink = sinks.back();
    ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
  }
  auto alone = Builtin(4096);
  for (int i = 0; i < 18; ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    if (i % 3 == 2) {
      EXPECT_EQ(sinks[i]->status_.code(), absl::StatusCode::kCancelled);
      continue;
    }
    ASSERT_TRUE(sinks[i]->status_.ok()) << sinks[i]->status_;
    auto ref = Generate(*alone, jobs[i].prompts[0], jobs[i].sampling, nullptr,
                        jobs[i].interventions.get());
    EXPECT_EQ(sinks[i]->tokens_, ref->tokens) << "job " << i;
  }
  ExpectAllBlocksFree(scheduler);
  const SchedulerCounters counters = scheduler.Counters();
  EXPECT_GT(counters.prefix_hit_tokens, 0);
  EXPECT_GT(counters.preemptions, 0);
  EXPECT_EQ(model->blocks().num_free(), model->blocks().num_blocks());
}

}  // namespace
}  // namespace lensd
