// The scheduler against the offline reference paths: concurrent, chunked, preempted and
// cancelled jobs give exactly the tokens and activations of Generate / RunWithCache run alone,
// and every KV block comes back.
#include "server/scheduler.h"

#include <cstring>

#include "engine/model/safetensors.h"
#include "engine/runtime/generate.h"
#include "tests/failing_backend.h"
#include "tests/server/recording_sink.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::RecordingSink;

std::unique_ptr<Model> Builtin(int kv_tokens, int block_size = 16) {
  LoadOptions o;
  o.kv_tokens = kv_tokens;
  o.block_size = block_size;
  return *Model::Load(o);
}

Job GenerateJob(std::vector<int32_t> prompt, int max_new, float temperature, uint64_t seed,
                std::shared_ptr<JobSink> sink) {
  Job job;
  job.prompts = {std::move(prompt)};
  job.sampling.max_new_tokens = max_new;
  job.sampling.temperature = temperature;
  job.sampling.seed = seed;
  job.sampling.ignore_eos = true;
  job.sink = std::move(sink);
  return job;
}

std::vector<int32_t> Prompt(int i) {
  std::vector<int32_t> p = {1};
  for (int k = 0; k < 3 + (i * 7) % 23; ++k) p.push_back(3 + (i * 31 + k * 17) % 250);
  return p;
}

// Offline reference: each job alone on a fresh model.
std::vector<int32_t> Alone(const Job& job) {
  auto model = Builtin(4096);
  auto r = Generate(*model, job.prompts[0], job.sampling);
  EXPECT_TRUE(r.ok()) << r.status();
  return r->tokens;
}

void ExpectAllBlocksFree(const Scheduler& s) {
  // Counters are published after each step; wait for the step that follows the last finish.
  for (int i = 0; i < 200 && s.Counters().kv_blocks_free != s.Counters().kv_blocks_total; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(s.Counters().kv_blocks_free, s.Counters().kv_blocks_total);
}

TEST(Scheduler, ConcurrentChunkedGenerationEqualsGenerateAlone) {
  auto model = Builtin(4096);
  Scheduler scheduler(*model, {/*max_batch_tokens=*/8, /*max_running=*/64, /*max_queue=*/64});
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<Job> refs;
  for (int i = 0; i < 12; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    Job job = GenerateJob(Prompt(i), 5 + i % 6, i % 2 ? 0.8f : 0.0f, 100 + i, sinks.back());
    refs.push_back(job);
    ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
  }
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    ASSERT_TRUE(sinks[i]->status_.ok()) << sinks[i]->status_;
    EXPECT_EQ(sinks[i]->tokens_, Alone(refs[i])) << "job " << i;
    EXPECT_EQ(sinks[i]->stats_.generated, sinks[i]->tokens_);
  }
  ExpectAllBlocksFree(scheduler);
}

TEST(Scheduler, PreemptionByRecomputeKeepsTokens) {
  // 6 blocks of 8 tokens: four 30-token sequences cannot all hold their blocks at once.
  auto model = Builtin(48, /*block_size=*/8);
  Scheduler scheduler(*model, {64, 64, 64});
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<Job> refs;
  for (int i = 0; i < 4; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    std::vector<int32_t> prompt = Prompt(i);
    prompt.resize(std::min<size_t>(prompt.size(), 10));
    Job job = GenerateJob(prompt, 20, 0.0f, 0, sinks.back());
    refs.push_back(job);
    ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    ASSERT_TRUE(sinks[i]->status_.ok()) << sinks[i]->status_;
    EXPECT_EQ(sinks[i]->tokens_, Alone(refs[i])) << "job " << i;
  }
  EXPECT_GT(scheduler.Counters().preemptions, 0);
  ExpectAllBlocksFree(scheduler);
}

// Longrope (phi3_longrope: short frequencies up to 8 tokens, long beyond): served greedy
// generations equal Hugging Face's full recompute (the reference's ids), whether the prompt is
// long from the start and prefilled in chunks, or short and grows past 8 (recomputed then),
// with prefix caching across the two kinds of sequence.
TEST(Scheduler, LongropeSequencesEqualFullRecomputeAcrossTheSwitch) {
  std::unique_ptr<Model> model = testing::LoadFamily("phi3_longrope", /*block_size=*/4);
  ASSERT_NE(model, nullptr);
  auto ref = SafetensorsFile::Open(testing::FamilyDir("phi3_longrope") + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  Scheduler scheduler(*model, {/*max_batch_tokens=*/5, /*max_running=*/64, /*max_queue=*/64});
  std::vector<std::vector<int32_t>> expected;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int round = 0; round < 2; ++round) {  // the second round meets the first's blocks
    for (const std::string p : {"p0", "p1"}) {
      const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find(p + ".input_ids"));
      std::vector<int32_t> greedy = testing::ToIds(*(*ref)->Find(p + ".greedy"));
      expected.emplace_back(greedy.begin() + static_cast<std::ptrdiff_t>(ids.size()), greedy.end());
      sinks.push_back(std::make_shared<RecordingSink>());
      ASSERT_TRUE(scheduler.Submit(GenerateJob(ids, 12, 0.0f, 0, sinks.back())).ok());
    }
    for (size_t i = sinks.size() - 2; i < sinks.size(); ++i) {
      ASSERT_TRUE(sinks[i]->Wait());
      ASSERT_TRUE(sinks[i]->status_.ok()) << sinks[i]->status_;
      EXPECT_EQ(sinks[i]->tokens_, expected[i]) << "job " << i;
    }
  }
  EXPECT_EQ(scheduler.Counters().preemptions, 2);  // the 7-token prompt, once per round
  EXPECT_GT(scheduler.Counters().prefix_hit_tokens, 0);
  ExpectAllBlocksFree(scheduler);
}

TEST(Scheduler, CaptureAmidGenerationEqualsRunWithCache) {
  auto model = Builtin(4096);
  const ModelConfig& c = model->config();
  Scheduler scheduler(*model, {16, 64, 64});
  auto gen = std::make_shared<RecordingSink>();
  ASSERT_TRUE(scheduler.Submit(GenerateJob(Prompt(3), 30, 0.0f, 0, gen)).ok());
  auto cap = std::make_shared<RecordingSink>();
  Job job;
  job.kind = Job::Kind::kCapture;
  job.prompts = {Prompt(1), Prompt(2), Prompt(5)};  // prompt 5 exceeds the step budget
  job.hooks = HookSelection::All(c);
  job.sink = cap;
  ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
  ASSERT_TRUE(cap->Wait());
  ASSERT_TRUE(gen->Wait());
  ASSERT_TRUE(cap->status_.ok()) << cap->status_;
  auto reference_model = Builtin(4096);
  for (int p = 0; p < 3; ++p) {
    auto ref = RunWithCache(*reference_model, Prompt(p == 0 ? 1 : p == 1 ? 2 : 5), HookSelection::All(c));
    ASSERT_TRUE(ref.ok());
    ASSERT_EQ(cap->tensors_.count({p, "logits"}), 1u);
    const Buffer& logits = cap->tensors_.at({p, "logits"});
    ASSERT_EQ(logits.NumBytes(), ref->logits.NumBytes());
    EXPECT_EQ(std::memcmp(logits.As<char>(), ref->logits.As<char>(), logits.NumBytes()), 0);
    EXPECT_TRUE(cap->Received(p, ref->cache)) << "prompt " << p;
  }
  EXPECT_EQ(gen->tokens_, Alone(GenerateJob(Prompt(3), 30, 0.0f, 0, nullptr)));
  ExpectAllBlocksFree(scheduler);
}

TEST(Scheduler, CancellationAndDeadlineFreeBlocks) {
  auto model = Builtin(4096);
  Scheduler scheduler(*model, {64, 64, 64});
  auto cancelled = std::make_shared<RecordingSink>();
  cancelled->CancelAfter(3);
  ASSERT_TRUE(scheduler.Submit(GenerateJob(Prompt(1), 500, 0.0f, 0, cancelled)).ok());
  auto late = std::make_shared<RecordingSink>();
  Job job = GenerateJob(Prompt(2), 500, 0.0f, 0, late);
  job.deadline = Clock::now() - std::chrono::seconds(1);
  ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
  auto ok = std::make_shared<RecordingSink>();
  ASSERT_TRUE(scheduler.Submit(GenerateJob(Prompt(4), 8, 0.0f, 0, ok)).ok());
  ASSERT_TRUE(cancelled->Wait());
  ASSERT_TRUE(late->Wait());
  ASSERT_TRUE(ok->Wait());
  EXPECT_EQ(cancelled->status_.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(cancelled->tokens_.size(), 10u);
  EXPECT_EQ(late->status_.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(ok->status_.ok());
  EXPECT_EQ(ok->tokens_.size(), 8u);
  ExpectAllBlocksFree(scheduler);
  EXPECT_EQ(scheduler.Counters().active_jobs, 0);
}

TEST(Scheduler, BoundedQueueAndShutdown) {
  auto model = Builtin(4096);
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  {
    Scheduler scheduler(*model, {64, 64, /*max_queue=*/1});
    ASSERT_TRUE(scheduler.Submit(GenerateJob(Prompt(1), 2000, 0.0f, 0, first)).ok());
    absl::Status refused = scheduler.Submit(GenerateJob(Prompt(2), 4, 0.0f, 0, second));
    EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  }  // destroyed mid-generation
  ASSERT_TRUE(first->Wait());
  EXPECT_EQ(first->status_.code(), absl::StatusCode::kUnavailable);
}

TEST(Scheduler, FailedStepFailsItsJobsAndServingGoesOn) {
  // Device memory running out mid-step (Backend::TakeError): the jobs of that step finish
  // with RESOURCE_EXHAUSTED, the next jobs are served exactly, and every block comes back.
  auto fail_in = std::make_shared<std::atomic<int>>(0);
  LoadOptions o;
  o.kv_tokens = 4096;
  o.wrap_backend = testing::FailingBackend::Wrapper(fail_in);
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  Scheduler scheduler(**model, {/*max_batch_tokens=*/64, /*max_running=*/64, /*max_queue=*/64});
  fail_in->store(3);
  auto failed = std::make_shared<RecordingSink>();
  ASSERT_TRUE(scheduler.Submit(GenerateJob(Prompt(1), 6, 0.0f, 1, failed)).ok());
  ASSERT_TRUE(failed->Wait());
  EXPECT_EQ(failed->status_.code(), absl::StatusCode::kResourceExhausted) << failed->status_;
  for (int i = 2; i < 5; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    Job job = GenerateJob(Prompt(i), 6, 0.8f, 100 + i, sink);
    Job ref = job;
    ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
    ASSERT_TRUE(sink->Wait());
    ASSERT_TRUE(sink->status_.ok()) << sink->status_;
    EXPECT_EQ(sink->tokens_, Alone(ref)) << "job " << i;
  }
  ExpectAllBlocksFree(scheduler);
}

TEST(Scheduler, GradientJobsRunInAStepOfTheirOwnAndEqualRunWithGradients) {
  auto model = Builtin(4096);
  const ModelConfig& c = model->config();
  Scheduler scheduler(*model, {16, 64, 64});
  auto gen = std::make_shared<RecordingSink>();
  ASSERT_TRUE(scheduler.Submit(GenerateJob(Prompt(3), 20, 0.0f, 0, gen)).ok());
  Objective objective;
  objective.kind = Objective::Kind::kLogitDiff;
  objective.answer = {5}, objective.wrong = {6};
  auto grad = std::make_shared<RecordingSink>();
  Job job;
  job.kind = Job::Kind::kCapture;
  job.prompts = {Prompt(1), Prompt(4)};
  job.hooks = *HookSelection::Parse(c, {"blocks.*.hook_resid_pre", "blocks.1.attn.hook_z"});
  job.objective = objective;
  job.sink = grad;
  ASSERT_TRUE(scheduler.Submit(std::move(job)).ok());
  ASSERT_TRUE(grad->Wait());
  ASSERT_TRUE(gen->Wait());
  ASSERT_TRUE(grad->status_.ok()) << grad->status_;
  auto reference = RunWithGradients(
      *Builtin(4096), {Prompt(1), Prompt(4)},
      *HookSelection::Parse(c, {"blocks.*.hook_resid_pre", "blocks.1.attn.hook_z"}), objective);
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(grad->stats_.objective.size(), 2u);
  for (int p = 0; p < 2; ++p) {
    EXPECT_EQ(grad->stats_.objective[p], *(*reference)[p].objective);
    EXPECT_TRUE(grad->Received(p, (*reference)[p].cache)) << "prompt " << p;
  }
  EXPECT_EQ(gen->tokens_, Alone(GenerateJob(Prompt(3), 20, 0.0f, 0, nullptr)));
  ExpectAllBlocksFree(scheduler);
}

// Three generate jobs in turn, each prompt extended by the tokens of the one before; the
// second Next waits until the test has tried to submit past the full queue.
class ChainProgram : public JobProgram {
 public:
  std::optional<Job> Next() override {
    if (!sinks.empty()) {
      EXPECT_TRUE(sinks.back()->status_.ok());  // OnFinish(OK) came first
      prompt.insert(prompt.end(), sinks.back()->tokens_.begin(), sinks.back()->tokens_.end());
    }
    if (sinks.size() == 1) {
      std::unique_lock<std::mutex> lock(mu);
      EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return tried; }));
    }
    if (sinks.size() == 3) {
      std::lock_guard<std::mutex> lock(mu);
      over = true;
      cv.notify_all();
      return std::nullopt;
    }
    sinks.push_back(std::make_shared<RecordingSink>());
    return GenerateJob(prompt, 4, 0.0f, 0, sinks.back());
  }
  void Tried() {
    std::lock_guard<std::mutex> lock(mu);
    tried = true;
    cv.notify_all();
  }
  bool WaitOver() {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(60), [&] { return over; });
  }

  std::vector<int32_t> prompt = Prompt(2);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::mutex mu;
  std::condition_variable cv;
  bool tried = false, over = false;
};

TEST(Scheduler, AProgramIsOneRequestFromItsFirstJobToItsLast) {
  auto model = Builtin(4096);
  Scheduler scheduler(*model, {64, 64, /*max_queue=*/1});
  auto program = std::make_shared<ChainProgram>();
  ASSERT_TRUE(scheduler.Submit(program).ok());
  // The program holds the one place in the queue between its jobs, and its next jobs are
  // queued although the queue is full.
  auto other = std::make_shared<RecordingSink>();
  EXPECT_EQ(scheduler.Submit(GenerateJob(Prompt(1), 4, 0.0f, 0, other)).code(),
            absl::StatusCode::kUnavailable);
  program->Tried();
  ASSERT_TRUE(program->WaitOver());
  ASSERT_EQ(program->sinks.size(), 3u);
  std::vector<int32_t> prompt = Prompt(2);
  for (const auto& sink : program->sinks) {
    ASSERT_TRUE(sink->Wait());
    EXPECT_TRUE(sink->status_.ok()) << sink->status_;
    EXPECT_EQ(sink->tokens_, Alone(GenerateJob(prompt, 4, 0.0f, 0, nullptr)));
    prompt.insert(prompt.end(), sink->tokens_.begin(), sink->tokens_.end());
  }
  for (int i = 0; i < 200 && scheduler.Counters().active_jobs != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(scheduler.Counters().active_jobs, 0);
  ExpectAllBlocksFree(scheduler);
}

}  // namespace
}  // namespace lensd
