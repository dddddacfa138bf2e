// The scheduler: one thread owns all batching state and drives Model::Forward. Other threads
// talk to it only through Submit (a bounded queue) and read its published counters.
//
// Each step it (1) drops jobs whose sink is cancelled or whose deadline passed, freeing their
// KV blocks; (2) admits waiting sequences in arrival order while their tokens' KV blocks can
// be reserved; (3) makes sure every running sequence's blocks cover its tokens, preempting the
// most recently admitted sequence (its blocks are freed; it is recomputed later) when blocks
// run out; (4) builds one batch: every decode token, then prefill chunks under the per-step
// token budget (continuous batching with chunked prefill); capture prompts run whole in one
// step so their hooks have full TransformerLens shapes; (5) runs the forward pass, streams
// hooks as layers finish, samples, and finishes jobs (a program's next job is queued as its
// previous one finishes). Steps (2)-(4) are the batching policy (batch_policy.h); this class
// is the thread, the model and the sinks around it. A sequence's results do not depend on
// what else is in the batch (the engine is batch-invariant), so preemption and chunking
// never change tokens.
#ifndef LENSD_SERVER_SCHEDULER_H_
#define LENSD_SERVER_SCHEDULER_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "engine/runtime/model.h"
#include "server/batch_policy.h"
#include "server/job.h"

namespace lensd {

// Published after every step; readable from any thread.
struct SchedulerCounters {
  int kv_blocks_free = 0;
  int kv_blocks_total = 0;
  int active_jobs = 0;   // accepted, not finished
  int queued_seqs = 0;   // waiting for admission
  int64_t steps = 0;
  int64_t generated_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t preemptions = 0;
  std::array<int64_t, kNumInterventionOps> interventions{};  // in accepted requests, per op
  int kv_blocks_cached = 0;        // published blocks (in use or waiting for reuse)
  int64_t prefix_hit_blocks = 0;   // blocks admitted sequences took from the cache
  int64_t prefix_hit_tokens = 0;   // prompt tokens they were spared computing
  int64_t kv_blocks_evicted = 0;
  int64_t gradient_requests = 0;  // jobs run forward and backward (Job::objective)
  int64_t gradient_tokens = 0;    // their prompt tokens
};

class BatchHookSink;

class Scheduler {
 public:
  Scheduler(Model& model, SchedulerOptions options);
  // Fails every unfinished job with UNAVAILABLE and joins the thread.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a validated job. UNAVAILABLE when the queue is full. On success the job's sink
  // will see OnFinish exactly once.
  absl::Status Submit(Job job);
  // Queues a program's first job (JobProgram); its next ones follow from the scheduler thread.
  // UNAVAILABLE when the queue is full.
  absl::Status Submit(std::shared_ptr<JobProgram> program);
  SchedulerCounters Counters() const;

 private:
  void Loop();
  bool TakeInbox();  // false when stopping
  // A job's sequences onto the waiting queue.
  void Enqueue(Job job);
  void Reap();
  // Adds a request's ops to the counters (metrics) and logs them at debug level.
  void CountInterventions(const InterventionSet& set);
  void Admit();
  void RunBatch(const std::vector<Work>& batch);
  // A gradient batch's step (Model::ForwardBackward): each prompt's objective into its job's
  // stats, hooks to `hooks`, gradients to the jobs' sinks.
  absl::StatusOr<ForwardResult> ForwardBackward(const std::vector<Work>& batch,
                                                const std::vector<SeqInput>& inputs,
                                                BatchHookSink& hooks,
                                                const std::vector<const Job*>& jobs,
                                                const std::vector<int>& prompts);
  // After a step: `n` more tokens computed; `logits` are the sequence's rows.
  void Advance(Seq& s, int n, const float* logits);
  void Sample(Seq& seq, const float* logits);
  // Reports the job's end to its sink; then, if it belongs to a program and ended OK, queues
  // the program's next job.
  void FinishJob(JobState& job, const absl::Status& status);
  void RemoveFinished();
  void Publish();

  Model& model_;
  const SchedulerOptions options_;
  const int rope_switch_;  // RopeSwitch of the model's config (0: not longrope)

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> inbox_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> accepted_{0};  // jobs (programs: whole) submitted and not finished

  // Owned by the scheduler thread.
  SeqQueue waiting_;
  SeqList running_;

  mutable std::mutex counters_mu_;
  SchedulerCounters counters_;
  std::thread thread_;
};

}  // namespace lensd

#endif  // LENSD_SERVER_SCHEDULER_H_
