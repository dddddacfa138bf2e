#include "server/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace lensd {
namespace {

// The prefix key of sequences whose K/V are their own (nothing with it is ever published).
constexpr uint64_t kOwnKvKey = 0x5ae5ae5ae5ae5ae5ULL;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

// Routes hooks (or, for `gradients`, their gradients) of capture sequences in the current
// batch to their jobs' sinks.
class BatchHookSink : public HookSink {
 public:
  BatchHookSink(const std::vector<const Job*>& jobs, const std::vector<int>& prompts,
                bool gradients = false)
      : jobs_(jobs), prompts_(prompts), gradients_(gradients) {}
  bool Wants(int seq, HookId id) const override {
    return jobs_[seq]->kind == Job::Kind::kCapture && jobs_[seq]->hooks.Contains(id);
  }
  bool WantsAny(int seq) const override {
    return jobs_[seq]->kind == Job::Kind::kCapture && !jobs_[seq]->hooks.empty();
  }
  void Capture(int seq, HookId id, TensorView value) override {
    if (gradients_) {
      jobs_[seq]->sink->OnGradient(prompts_[seq], id, value);
    } else {
      jobs_[seq]->sink->OnTensor(prompts_[seq], id, value);
    }
  }

 private:
  const std::vector<const Job*>& jobs_;
  const std::vector<int>& prompts_;
  const bool gradients_;
};

Scheduler::Scheduler(Model& model, SchedulerOptions options)
    : model_(model), options_(options), rope_switch_(RopeSwitch(model.config())) {
  Publish();
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

absl::Status Scheduler::Submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the server is shutting down");
    if (accepted_.load() >= options_.max_queue) {
      return absl::UnavailableError(absl::StrCat("the server is at capacity (", options_.max_queue,
                                                 " requests in flight); retry later"));
    }
    ++accepted_;
    inbox_.push_back(std::move(job));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

absl::Status Scheduler::Submit(std::shared_ptr<JobProgram> program) {
  std::optional<Job> first = program->Next();
  if (!first) return absl::OkStatus();  // over before it began; it reported why
  first->program = std::move(program);
  return Submit(std::move(*first));
}

SchedulerCounters Scheduler::Counters() const {
  std::lock_guard<std::mutex> lock(counters_mu_);
  return counters_;
}

void Scheduler::Loop() {
  while (TakeInbox()) {
    Reap();
    Admit();
    if (std::vector<Work> gradients = GradientBatch(running_); !gradients.empty()) {
      RunBatch(gradients);
    }
    std::vector<Work> batch = BuildBatch(running_, options_.max_batch_tokens);
    if (!batch.empty()) RunBatch(batch);
    RemoveFinished();
    Publish();
  }
  for (auto& s : running_) FinishJob(*s->job, absl::UnavailableError("the server is shutting down"));
  for (auto& s : waiting_) FinishJob(*s->job, absl::UnavailableError("the server is shutting down"));
  RemoveFinished();
  std::deque<Job> rest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rest.swap(inbox_);
  }
  for (Job& job : rest) job.sink->OnFinish(absl::UnavailableError("the server is shutting down"), {});
}

bool Scheduler::TakeInbox() {
  std::deque<Job> jobs;
  {
    std::unique_lock<std::mutex> lock(mu_);
    const bool idle = running_.empty() && waiting_.empty();
    // While idle, sleep until work arrives; poll periodically so cancellations of waiting
    // jobs are still noticed when nothing can be admitted.
    if (idle) cv_.wait(lock, [&] { return stop_ || !inbox_.empty(); });
    if (stop_) return false;
    jobs.swap(inbox_);
  }
  for (Job& job : jobs) Enqueue(std::move(job));
  return true;
}

void Scheduler::Enqueue(Job job) {
  if (job.interventions) CountInterventions(*job.interventions);
  auto state = std::make_shared<JobState>();
  state->job = std::move(job);
  state->remaining = static_cast<int>(state->job.prompts.size());
  for (size_t i = 0; i < state->job.prompts.size(); ++i) {
    auto seq = std::make_unique<Seq>();
    seq->job = state;
    seq->prompt_index = static_cast<int>(i);
    seq->tokens = state->job.prompts[i];
    if (const InterventionSet* set = state->job.interventions.get()) {
      seq->prefix = {set->FirstPosition(seq->prompt_index), set->Fingerprint(seq->prompt_index)};
      // A patched prompt's K/V also depend on its source prompt: never share them.
      seq->publish = !set->HasPatch();
    }
    // Nor K/V that an attachment (a spliced or edited SAE) changes, which also never come from
    // the cache: every block takes a key no published block has.
    for (const auto& a : state->job.attachments) {
      if (!a->ChangesStream()) continue;
      seq->publish = false;
      seq->prefix = {0, kOwnKvKey};
    }
    MarkLongRope(*seq, rope_switch_);
    if (!seq->capture()) {
      seq->sampler = std::make_unique<Sampler>(state->job.sampling);
      seq->prompt_ints.assign(seq->tokens.begin(), seq->tokens.end());
    }
    waiting_.push_back(std::move(seq));
  }
}

void Scheduler::CountInterventions(const InterventionSet& set) {
  const std::array<int, kNumInterventionOps> counts = set.OpCounts();
  std::string ops;
  {
    std::lock_guard<std::mutex> lock(counters_mu_);
    for (int k = 0; k < kNumInterventionOps; ++k) {
      counters_.interventions[k] += counts[k];
      if (counts[k] > 0) absl::StrAppend(&ops, ops.empty() ? "" : ", ", counts[k], " ",
                                         OpName(static_cast<InterventionOp>(k)));
    }
  }
  spdlog::debug("request with interventions: {}", ops);
}

void Scheduler::Reap() {
  const Clock::time_point now = Clock::now();
  auto check = [&](Seq& s) {
    JobState& job = *s.job;
    if (job.finished) return;
    if (job.job.sink->Cancelled()) {
      FinishJob(job, absl::CancelledError("the client cancelled the request"));
    } else if (now >= job.job.deadline) {
      FinishJob(job, absl::DeadlineExceededError("the request's deadline passed"));
    }
  };
  for (auto& s : running_) check(*s);
  for (auto& s : waiting_) check(*s);
  RemoveFinished();
}

void Scheduler::Admit() {
  const int switched = SwitchRope(running_, waiting_, model_.blocks(), rope_switch_);
  Admission a = lensd::Admit(waiting_, running_, model_.blocks(), options_);
  for (const auto& job : a.refused) {
    FinishJob(*job, absl::ResourceExhaustedError("the KV cache cannot hold this request"));
  }
  const int preempted = EnsureBlocks(running_, waiting_, model_.blocks());
  std::lock_guard<std::mutex> lock(counters_mu_);
  counters_.prefix_hit_blocks += a.prefix_hit_blocks;
  counters_.prefix_hit_tokens += a.prefix_hit_tokens;
  counters_.preemptions += preempted + switched;
}

void Scheduler::RunBatch(const std::vector<Work>& batch) {
  const ModelConfig& c = model_.config();
  std::vector<SeqInput> inputs;
  std::vector<const Job*> jobs;
  std::vector<int> prompts;
  for (const auto& [s, n] : batch) {
    SeqInput in;
    in.tokens.assign(s->tokens.begin() + s->computed, s->tokens.begin() + s->computed + n);
    in.start_pos = s->computed;
    in.block_table = &s->blocks;
    const InterventionSet* set = s->job->job.interventions.get();
    in.all_logits = AllLogits(*s);
    in.interventions = set;
    if (!s->job->job.attachments.empty()) in.attachments = &s->job->job.attachments;
    in.prompt_index = s->prompt_index;
    in.context = static_cast<int>(s->tokens.size());
    inputs.push_back(std::move(in));
    jobs.push_back(&s->job->job);
    prompts.push_back(s->prompt_index);
  }
  BatchHookSink hooks(jobs, prompts);
  const Clock::time_point t0 = Clock::now();
  // A gradient batch is one job's prompts (GradientBatch).
  absl::StatusOr<ForwardResult> result = batch[0].seq->gradient()
                                             ? ForwardBackward(batch, inputs, hooks, jobs, prompts)
                                             : model_.Forward(inputs, &hooks);
  const double ms = MsBetween(t0, Clock::now());
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& [s, n] = batch[i];
    s->job->stats.compute_ms += ms;
    if (!result.ok()) {
      FinishJob(*s->job, result.status());
      continue;
    }
    if (s->computed + n <= static_cast<int>(s->job->job.prompts[s->prompt_index].size())) {
      prompt_tokens += n;
    }
    Advance(*s, n, result->logits.As<float>() + int64_t{result->first_row[i]} * c.vocab_size);
    if (options_.prefix_caching && s->publish) {
      model_.blocks().Publish(s->blocks, s->tokens, s->computed, s->prefix);
    }
  }
  std::lock_guard<std::mutex> lock(counters_mu_);
  ++counters_.steps;
  counters_.prompt_tokens += prompt_tokens;
}

absl::StatusOr<ForwardResult> Scheduler::ForwardBackward(const std::vector<Work>& batch,
                                                         const std::vector<SeqInput>& inputs,
                                                         BatchHookSink& hooks,
                                                         const std::vector<const Job*>& jobs,
                                                         const std::vector<int>& prompts) {
  BatchHookSink grads(jobs, prompts, /*gradients=*/true);
  JobState& job = *batch[0].seq->job;
  const Objective& o = *job.job.objective;
  job.stats.objective.assign(job.job.prompts.size(), 0.0);
  const int vocab = model_.config().vocab_size;
  auto objective = [&](int seq, TensorView logits, float* dlogits) -> absl::Status {
    const Seq& s = *batch[seq].seq;
    ASSIGN_OR_RETURN(job.stats.objective[s.prompt_index],
                     ObjectiveAndGradient(o, logits.As<float>(), s.tokens, vocab, dlogits));
    return absl::OkStatus();
  };
  // An objective at a hook: its gradient seeds the hook, its value comes from the forward.
  const bool hook_dot = o.kind == Objective::Kind::kHookDot;
  HookDotTap tap(o, &hooks, static_cast<int>(batch.size()));
  std::vector<int> lengths;
  for (const Work& w : batch) lengths.push_back(static_cast<int>(w.seq->tokens.size()));
  const HookSeed seed = HookDotSeed(o, lengths);
  absl::StatusOr<ForwardResult> result =
      model_.ForwardBackward(inputs, &tap, objective, &grads, hook_dot ? &seed : nullptr);
  for (size_t i = 0; i < batch.size() && hook_dot && result.ok(); ++i) {
    job.stats.objective[batch[i].seq->prompt_index] = tap.value(static_cast<int>(i));
  }
  if (result.ok()) {
    std::lock_guard<std::mutex> lock(counters_mu_);
    ++counters_.gradient_requests;
    for (const SeqInput& in : inputs) {
      counters_.gradient_tokens += static_cast<int64_t>(in.tokens.size());
    }
  }
  return result;
}

void Scheduler::Advance(Seq& s, int n, const float* logits) {
  s.computed += n;
  if (s.capture()) {
    if (s.job->job.want_logits) {
      const int64_t vocab = model_.config().vocab_size, rows = AllLogits(s) ? n : 1;
      s.job->job.sink->OnLogits(s.prompt_index, s.computed - static_cast<int>(rows),
                                {const_cast<float*>(logits), DType::kF32, {1, rows, vocab}});
    }
    s.done = true;
    if (--s.job->remaining == 0) FinishJob(*s.job, absl::OkStatus());
  } else if (s.pending() == 0) {
    Sample(s, logits);
  }
}

void Scheduler::Sample(Seq& s, const float* logits) {
  const ModelConfig& c = model_.config();
  JobState& job = *s.job;
  const SamplingParams& params = job.job.sampling;
  const int32_t next = s.sampler->Sample(logits, c.vocab_size, s.prompt_ints, s.out_ints);
  s.out_ints.push_back(next);
  s.tokens.push_back(next);
  if (job.first_token == Clock::time_point{}) job.first_token = Clock::now();
  job.job.sink->OnToken(next, static_cast<int>(s.out_ints.size()) - 1);
  {
    std::lock_guard<std::mutex> lock(counters_mu_);
    ++counters_.generated_tokens;
  }
  if (std::optional<FinishReason> why = FinishAfter(c, params, next,
                                                    static_cast<int>(s.out_ints.size()),
                                                    static_cast<int>(s.tokens.size()))) {
    job.stats.finish = *why;
    job.stats.generated.assign(s.out_ints.begin(), s.out_ints.end());
    s.done = true;
    FinishJob(job, absl::OkStatus());
  }
}

void Scheduler::FinishJob(JobState& job, const absl::Status& status) {
  if (job.finished) return;
  job.finished = true;
  const Clock::time_point now = Clock::now();
  const Clock::time_point admitted = job.admitted == Clock::time_point{} ? now : job.admitted;
  job.stats.queue_ms = MsBetween(job.accepted, admitted);
  if (job.first_token != Clock::time_point{}) {
    job.stats.first_token_ms = MsBetween(job.accepted, job.first_token);
  }
  job.stats.total_ms = MsBetween(job.accepted, now);
  job.job.sink->OnFinish(status, job.stats);
  if (status.ok() && job.job.program != nullptr) {
    if (std::optional<Job> next = job.job.program->Next()) {
      next->program = job.job.program;
      Enqueue(std::move(*next));  // the same accepted request goes on
      return;
    }
  }
  --accepted_;
}

void Scheduler::RemoveFinished() {
  auto finished = [&](const std::unique_ptr<Seq>& s) {
    if (!s->done && !s->job->finished) return false;
    model_.blocks().Release(s->blocks);
    return true;
  };
  running_.erase(std::remove_if(running_.begin(), running_.end(), finished), running_.end());
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), finished), waiting_.end());
}

void Scheduler::Publish() {
  std::lock_guard<std::mutex> lock(counters_mu_);
  counters_.kv_blocks_free = model_.blocks().num_free();
  counters_.kv_blocks_total = model_.blocks().num_blocks();
  counters_.kv_blocks_cached = model_.blocks().num_cached();
  counters_.kv_blocks_evicted = model_.blocks().evicted();
  counters_.active_jobs = accepted_.load();
  counters_.queued_seqs = static_cast<int>(waiting_.size());
}

}  // namespace lensd
