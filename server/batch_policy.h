// The scheduler's batching policy (scheduler.h) as plain code over its two queues and the KV
// block allocator: admission in arrival order with prefix matching, preemption by recompute,
// and building each step's batch. No model, threads or sinks: tests drive it directly, and
// the scheduler only runs what it decides.
#ifndef LENSD_SERVER_BATCH_POLICY_H_
#define LENSD_SERVER_BATCH_POLICY_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "engine/runtime/kv_cache.h"
#include "engine/runtime/sampler.h"
#include "server/job.h"

namespace lensd {

struct SchedulerOptions {
  int max_batch_tokens = 256;  // prompt tokens per step (decode tokens always run)
  int max_running = 64;        // sequences holding KV blocks at once
  int max_queue = 256;         // accepted jobs not yet finished; more is UNAVAILABLE
  // Share the KV blocks of common prefixes (engine/runtime/kv_cache.h): generation reuses the
  // published blocks of any earlier request with the same prefix; every request publishes.
  bool prefix_caching = true;
};

// A job inside the scheduler.
struct JobState {
  Job job;
  Clock::time_point accepted = Clock::now();
  Clock::time_point admitted{};
  Clock::time_point first_token{};
  int remaining = 0;  // sequences not yet finished
  bool finished = false;
  JobStats stats;
};

// One prompt of a job.
struct Seq {
  std::shared_ptr<JobState> job;
  int prompt_index = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens (recomputed after preemption)
  int computed = 0;             // tokens whose K/V are in the cache
  std::vector<int32_t> blocks;
  PrefixKey prefix;     // how its blocks hash for prefix caching
  bool publish = true;  // whether its computed blocks are offered for reuse
  bool long_rope = false;  // its K/V take longrope's long frequencies (SeqInput::Context)
  bool done = false;
  // Generation only.
  std::unique_ptr<Sampler> sampler;
  std::vector<int> prompt_ints, out_ints;

  bool capture() const { return job->job.kind == Job::Kind::kCapture; }
  // A capture with gradients (Job::objective): its prompts run in a step of their own.
  bool gradient() const { return capture() && job->job.objective.has_value(); }
  // Prompts linked by patch, or by gradients, run in one step: they are admitted, batched and
  // preempted together.
  bool gang() const {
    return gradient() ||
           (capture() && job->job.interventions && job->job.interventions->HasPatch());
  }
  int pending() const { return static_cast<int>(tokens.size()) - computed; }
};

using SeqQueue = std::deque<std::unique_ptr<Seq>>;  // waiting, in arrival order
using SeqList = std::vector<std::unique_ptr<Seq>>;  // running, in admission order

// [begin, end) of the gang around `index` in `list` (just `index` when not in a gang).
template <typename List>
std::pair<size_t, size_t> GangAt(const List& list, size_t index) {
  size_t begin = index, end = index + 1;
  if (!list[index]->gang()) return {begin, end};
  const JobState* job = list[index]->job.get();
  while (begin > 0 && list[begin - 1]->job.get() == job) --begin;
  while (end < list.size() && list[end]->job.get() == job) ++end;
  return {begin, end};
}

struct Admission {
  // Jobs whose sequences cannot fit even in an idle cache, taken off the queue; the caller
  // fails them (cannot happen for jobs the edge validated).
  std::vector<std::shared_ptr<JobState>> refused;
  int64_t prefix_hit_blocks = 0;  // blocks the admitted sequences took from the prefix cache
  int64_t prefix_hit_tokens = 0;
};

// Moves waiting sequences to running in arrival order (gangs whole) while at most
// max_running run and their tokens' blocks can be reserved, after taking their longest
// cached prefix (prefix_caching; generation, and captures that reuse prefixes).
Admission Admit(SeqQueue& waiting, SeqList& running, BlockAllocator& blocks,
                const SchedulerOptions& options);

// Makes every running sequence's blocks cover its tokens, oldest first, preempting the most
// recently admitted sequence (with its gang) back to the front of the queue when blocks run
// out: its blocks are freed and it is recomputed later. Returns the preemptions.
int EnsureBlocks(SeqList& running, SeqQueue& waiting, BlockAllocator& blocks);

// A sequence longer than `rope_switch` (RopeSwitch of the model's config; 0: none) takes
// longrope's long frequencies, in blocks under a prefix key of their own. Marks it so.
void MarkLongRope(Seq& s, int rope_switch);

// Running generations that grew past `rope_switch` since their K/V were computed go back to
// the front of the queue (blocks freed) to be recomputed with the long frequencies, as Hugging
// Face's Phi-3 does; returns how many.
int SwitchRope(SeqList& running, SeqQueue& waiting, BlockAllocator& blocks, int rope_switch);

struct Work {
  Seq* seq;
  int tokens;  // this step's tokens of `seq`
};

// One step's batch: every decode token, then prompt work under the token budget — chunked
// prefill, capture prompts whole (a gang all at once); the first prompt item may exceed the
// budget so that nothing starves. Gradient captures are not in it (GradientBatch).
std::vector<Work> BuildBatch(const SeqList& running, int max_batch_tokens);

// The oldest running gradient capture with work left, all its prompts whole: a step of its
// own (forward and backward); empty when there is none.
std::vector<Work> GradientBatch(const SeqList& running);

// Whether a sequence's step returns logits for every computed row, or only the last.
bool AllLogits(const Seq& s);

}  // namespace lensd

#endif  // LENSD_SERVER_BATCH_POLICY_H_
