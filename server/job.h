// Work handed to the scheduler, validated at the RPC edge into plain domain structs, and the
// sink through which the scheduler reports progress back to whoever submitted it.
#ifndef LENSD_SERVER_JOB_H_
#define LENSD_SERVER_JOB_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/tensor.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/hooks.h"
#include "engine/runtime/interventions.h"
#include "engine/runtime/objective.h"
#include "engine/runtime/sampler.h"

namespace lensd {

using Clock = std::chrono::steady_clock;

struct JobStats {
  FinishReason finish = FinishReason::kLength;  // generate jobs
  std::vector<int32_t> generated;               // generate jobs
  double queue_ms = 0;        // accepted -> first admitted
  double first_token_ms = 0;  // accepted -> first token (generate)
  double compute_ms = 0;      // time inside forward steps that included this job
  double total_ms = 0;
  int preemptions = 0;
  int64_t prompt_tokens_cached = 0;  // prompt tokens taken from the prefix cache
  std::vector<double> objective;     // capture with an objective: per prompt
};

// Receives a job's results on the scheduler thread — except OnTensor, which may run on a
// device's capture-delivery thread during a step (HookSink::Capture); calls never overlap.
// Implementations must not block: they queue what they get for another thread to deliver.
// OnFinish is called exactly once, last.
class JobSink {
 public:
  virtual ~JobSink() = default;
  // True once nobody wants the results (client cancelled, gone or too slow); polled every
  // step, after which the job's KV blocks are freed and OnFinish(CANCELLED) is called.
  virtual bool Cancelled() const = 0;
  virtual void OnToken(int32_t id, int index) = 0;
  // A captured hook of prompt `prompt`: host float32 with its TransformerLens shape (batch 1).
  virtual void OnTensor(int prompt, HookId id, TensorView value) = 0;
  // Logits of prompt `prompt` at positions [first, first + n): host float32 [1, n, vocab]
  // (first > 0 only for jobs that reuse cached prefixes, which skip computing them).
  virtual void OnLogits(int prompt, int first, TensorView value) = 0;
  // The gradient of prompt `prompt`'s objective with respect to hook `id` (jobs with an
  // objective), as OnTensor; the last layer's first.
  virtual void OnGradient(int prompt, HookId id, TensorView value) {}
  virtual void OnFinish(const absl::Status& status, const JobStats& stats) = 0;
};

class JobProgram;

struct Job {
  enum class Kind { kGenerate, kCapture };
  Kind kind = Kind::kGenerate;
  std::vector<std::vector<int32_t>> prompts;  // generate: exactly one
  SamplingParams sampling;                    // generate
  HookSelection hooks;                        // capture (empty: logits only)
  bool want_logits = true;                    // capture
  // Capture without hooks that may start from cached prefixes (patching-sweep cells): logits
  // at positions >= logits_from (-1: only the last position); positions before may come
  // from the prefix cache and are not computed.
  bool reuse_prefix = false;
  int logits_from = -1;
  // Validated for these prompts (null: none). A capture job with patches runs all its prompts
  // in one step (the scheduler admits and batches them together).
  std::shared_ptr<const InterventionSet> interventions;
  // Capture: gradients of this objective for every prompt (Model::ForwardBackward); the job's
  // prompts run together in a step of their own.
  std::optional<Objective> objective;
  // Capture: SAEs (and other attachments) every prompt carries, at most one per hook.
  AttachmentList attachments;
  Clock::time_point deadline = Clock::time_point::max();
  std::shared_ptr<JobSink> sink;
  // The program this job is a phase of (null: a job alone); set by the scheduler.
  std::shared_ptr<JobProgram> program;
};

// A request made of jobs run one after another, each built from the results of those before
// (a PatchSweep: the baseline captures, then the cells). The scheduler owns the chain: when a
// job of the program finishes OK it asks for the next and queues it itself, so a program is
// one accepted request from its first job to its last and is never refused halfway for
// capacity. A job that fails ends the program (its sink reports that).
class JobProgram {
 public:
  virtual ~JobProgram() = default;
  // The next job, the first on the first call; nullopt when the program is over (it has
  // reported its outcome, success or its own error). Called on the scheduler thread after
  // the previous job's OnFinish(OK), and by Scheduler::Submit for the first.
  virtual std::optional<Job> Next() = 0;
};

}  // namespace lensd

#endif  // LENSD_SERVER_JOB_H_
