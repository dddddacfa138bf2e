#include "server/batch_policy.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace lensd {
namespace {

// Takes the cached blocks of the longest published prefix for a sequence about to be admitted
// (generation, and captures that reuse prefixes: other captures need every position computed).
void MatchPrefix(Seq& s, BlockAllocator& blocks, const SchedulerOptions& options) {
  const Job& job = s.job->job;
  if (!options.prefix_caching || !s.blocks.empty() || (s.capture() && !job.reuse_prefix)) return;
  // The last token always runs (its logits choose the next token, or are the result); so do
  // the positions whose logits a capture wants.
  int max_tokens = static_cast<int>(s.tokens.size()) - 1;
  if (s.capture() && job.logits_from >= 0) max_tokens = std::min(max_tokens, job.logits_from);
  s.computed = blocks.MatchPrefix(s.tokens, s.prefix, max_tokens, s.blocks);
}

// Moves the sequence at `index` back to the front of the queue (its blocks freed), with the
// rest of its gang; returns how many sequences left `running`.
size_t Preempt(SeqList& running, SeqQueue& waiting, BlockAllocator& blocks, size_t index) {
  const auto [begin, end] = GangAt(running, index);
  for (size_t k = end; k-- > begin;) {  // back to front, so the queue keeps their order
    std::unique_ptr<Seq> s = std::move(running[k]);
    blocks.Release(s->blocks);
    s->computed = 0;
    ++s->job->stats.preemptions;
    spdlog::debug("preempted a sequence of {} tokens (recomputed later)", s->tokens.size());
    waiting.push_front(std::move(s));
  }
  running.erase(running.begin() + static_cast<std::ptrdiff_t>(begin),
                running.begin() + static_cast<std::ptrdiff_t>(end));
  return end - begin;
}

// The prefix key of K/V computed with longrope's long frequencies (mixed into the sequence's).
constexpr uint64_t kLongRopeKey = 0x10e6209e10e6209eULL;

}  // namespace

void MarkLongRope(Seq& s, int rope_switch) {
  if (rope_switch <= 0 || s.long_rope || static_cast<int>(s.tokens.size()) <= rope_switch) return;
  s.long_rope = true;
  // No block is shared with short sequences; long ones share as any others do.
  s.prefix.key ^= kLongRopeKey, s.prefix.plain ^= kLongRopeKey;
}

int SwitchRope(SeqList& running, SeqQueue& waiting, BlockAllocator& blocks, int rope_switch) {
  int switched = 0;
  if (rope_switch <= 0) return switched;
  for (size_t i = running.size(); i-- > 0;) {  // back to front: the queue keeps their order
    Seq& s = *running[i];
    if (s.long_rope || static_cast<int>(s.tokens.size()) <= rope_switch) continue;
    MarkLongRope(s, rope_switch);
    if (s.computed == 0) continue;
    spdlog::debug("a sequence grew past {} tokens: recomputed with longrope's long frequencies",
                  rope_switch);
    Preempt(running, waiting, blocks, i);
    ++switched;
  }
  return switched;
}

Admission Admit(SeqQueue& waiting, SeqList& running, BlockAllocator& blocks,
                const SchedulerOptions& options) {
  Admission out;
  while (!waiting.empty()) {
    const size_t n = GangAt(waiting, 0).second;  // a gang is admitted whole
    if (!running.empty() && static_cast<int>(running.size() + n) > options.max_running) break;
    for (size_t k = 0; k < n; ++k) MatchPrefix(*waiting[k], blocks, options);
    size_t reserved = 0;
    while (reserved < n && blocks.Reserve(waiting[reserved]->blocks,
                                          static_cast<int>(waiting[reserved]->tokens.size()))) {
      ++reserved;
    }
    if (reserved < n) {
      for (size_t k = 0; k < n; ++k) {  // matched prefixes too: back to the cache
        blocks.Release(waiting[k]->blocks);
        waiting[k]->computed = 0;
      }
      if (!running.empty()) break;
      // Nothing runs and it still does not fit: refuse it rather than spin.
      out.refused.push_back(waiting.front()->job);
      for (size_t k = 0; k < n; ++k) waiting.pop_front();
      continue;
    }
    for (size_t k = 0; k < n; ++k) {
      Seq& s = *waiting.front();
      if (s.job->admitted == Clock::time_point{}) s.job->admitted = Clock::now();
      if (s.computed > 0) {
        s.job->stats.prompt_tokens_cached += s.computed;
        out.prefix_hit_blocks += s.computed / blocks.block_size();
        out.prefix_hit_tokens += s.computed;
      }
      running.push_back(std::move(waiting.front()));
      waiting.pop_front();
    }
  }
  return out;
}

int EnsureBlocks(SeqList& running, SeqQueue& waiting, BlockAllocator& blocks) {
  int preemptions = 0;
  // Oldest first; victims are taken from the newest end, so a sequence already served here is
  // never preempted for a younger one.
  for (size_t i = 0; i < running.size(); ++i) {
    Seq& s = *running[i];
    while (!blocks.Reserve(s.blocks, static_cast<int>(s.tokens.size()))) {
      Preempt(running, waiting, blocks, running.size() - 1);
      ++preemptions;
      if (i >= running.size()) break;  // `s` itself (or its gang) went back to the queue
    }
  }
  return preemptions;
}

std::vector<Work> BuildBatch(const SeqList& running, int max_batch_tokens) {
  std::vector<Work> batch;
  int budget = max_batch_tokens;
  auto is_decode = [](const Seq& s) { return !s.capture() && s.computed > 0 && s.pending() == 1; };
  for (auto& s : running) {
    if (is_decode(*s)) {
      batch.push_back({s.get(), 1});
      --budget;
    }
  }
  bool prompt_added = false;
  for (size_t i = 0; i < running.size(); ++i) {
    Seq& s = *running[i];
    if (s.pending() == 0 || is_decode(s) || s.gradient()) continue;
    const auto [begin, end] = GangAt(running, i);
    int want = 0;
    for (size_t k = begin; k < end; ++k) want += running[k]->pending();
    if (!s.capture()) want = std::min(want, std::max(budget, 1));
    if (prompt_added && want > budget) {
      i = end - 1;
      continue;
    }
    for (size_t k = begin; k < end; ++k) {
      batch.push_back({running[k].get(), s.capture() ? running[k]->pending() : want});
    }
    budget -= want;
    prompt_added = true;
    i = end - 1;
  }
  return batch;
}

std::vector<Work> GradientBatch(const SeqList& running) {
  for (size_t i = 0; i < running.size(); ++i) {
    if (!running[i]->gradient() || running[i]->pending() == 0) continue;
    const auto [begin, end] = GangAt(running, i);
    std::vector<Work> batch;
    for (size_t k = begin; k < end; ++k) batch.push_back({running[k].get(), running[k]->pending()});
    return batch;
  }
  return {};
}

bool AllLogits(const Seq& s) {
  if (!s.capture()) return false;
  const Job& job = s.job->job;
  if (s.gradient()) return true;  // the objective reads every row
  if (job.reuse_prefix) return job.logits_from >= 0;
  // Logits interventions of a capture job may patch any position: compute every row.
  const InterventionSet* set = job.interventions.get();
  return job.want_logits || (set != nullptr && set->Touches({HookPoint::kUnembedOut, -1}));
}

}  // namespace lensd
