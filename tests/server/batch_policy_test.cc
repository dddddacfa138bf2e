// The batching policy without a model: what a step runs, who is admitted, who is preempted,
// and what the prefix cache spares — over a real block allocator and plain sequences.
#include "server/batch_policy.h"

#include <gtest/gtest.h>

#include "engine/model/weights.h"

namespace lensd {
namespace {

std::shared_ptr<JobState> NewJob(Job::Kind kind) {
  auto job = std::make_shared<JobState>();
  job->job.kind = kind;
  return job;
}

std::unique_ptr<Seq> SeqOf(std::shared_ptr<JobState> job, int tokens, int computed = 0,
                           int first_token = 1) {
  auto s = std::make_unique<Seq>();
  s->job = std::move(job);
  for (int i = 0; i < tokens; ++i) s->tokens.push_back(first_token + i);
  s->computed = computed;
  ++s->job->remaining;
  return s;
}

// A capture job whose prompt 0 patches from prompt 1: its two sequences are a gang.
std::shared_ptr<JobState> PatchJob(int tokens) {
  auto job = NewJob(Job::Kind::kCapture);
  Intervention iv;
  iv.hook = {HookPoint::kResidPre, 0};
  iv.op = InterventionOp::kPatch;
  iv.prompts = {0};
  iv.source = 1;
  auto set = InterventionSet::Create(BuiltinConfig(), {iv}, {tokens, tokens}, false, 0);
  EXPECT_TRUE(set.ok()) << set.status();
  job->job.interventions = *set;
  return job;
}

std::vector<std::pair<const Seq*, int>> Plan(const SeqList& running, int budget) {
  std::vector<std::pair<const Seq*, int>> out;
  for (const Work& w : BuildBatch(running, budget)) out.emplace_back(w.seq, w.tokens);
  return out;
}

// Longrope's switch at 8 tokens: a generation that grew to 9 with 8 computed goes back to be
// recomputed, under a prefix key of its own; one not computed yet is only marked; one still at
// 8 stays. Without a switch (0) nothing moves.
TEST(SwitchRope, RecomputesOnlySequencesThatGrewPastTheSwitch) {
  BlockAllocator blocks(16, 4);
  SeqList running;
  SeqQueue waiting;
  running.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 8, 7));  // at the switch
  running.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 9, 8));  // grew past it
  running.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 12));    // long, not yet computed
  for (auto& s : running) ASSERT_TRUE(blocks.Reserve(s->blocks, 12));
  EXPECT_EQ(SwitchRope(running, waiting, blocks, 0), 0);
  EXPECT_EQ(running.size(), 3u);
  const Seq* grew = running[1].get();
  EXPECT_EQ(SwitchRope(running, waiting, blocks, 8), 1);
  ASSERT_EQ(waiting.size(), 1u);
  EXPECT_EQ(waiting.front().get(), grew);
  EXPECT_TRUE(grew->long_rope);
  EXPECT_EQ(grew->computed, 0);
  EXPECT_TRUE(grew->blocks.empty());
  EXPECT_NE(grew->prefix.key, 0u);
  EXPECT_EQ(grew->prefix.plain, grew->prefix.key);  // no interventions: one key throughout
  ASSERT_EQ(running.size(), 2u);
  EXPECT_FALSE(running[0]->long_rope);
  EXPECT_TRUE(running[1]->long_rope);
  EXPECT_EQ(SwitchRope(running, waiting, blocks, 8), 0);  // marked ones stay
}

TEST(BuildBatch, DecodeTokensFirstThenPrefillChunkedToTheBudget) {
  SeqList running;
  running.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 40));      // prefill
  running.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 11, 10));  // decoding
  running.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 5));       // prefill
  const auto plan = Plan(running, 16);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].first, running[1].get());
  EXPECT_EQ(plan[0].second, 1);
  EXPECT_EQ(plan[1].first, running[0].get());
  EXPECT_EQ(plan[1].second, 15);  // the rest waits, and so does the third
}

TEST(BuildBatch, CapturePromptsRunWholeAndTheFirstPromptItemMayExceedTheBudget) {
  SeqList running;
  running.push_back(SeqOf(NewJob(Job::Kind::kCapture), 50));
  running.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 4));
  auto plan = Plan(running, 16);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].second, 50);
  // A gang runs all at once, even past the budget.
  running.clear();
  auto job = PatchJob(12);
  running.push_back(SeqOf(job, 12));
  running.push_back(SeqOf(job, 12));
  plan = Plan(running, 16);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].second + plan[1].second, 24);
}

TEST(Admit, InArrivalOrderWhileBlocksAndRunningSlotsLast) {
  BlockAllocator blocks(4, 4);  // 16 tokens
  SchedulerOptions options;
  SeqQueue waiting;
  SeqList running;
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 10));  // 3 blocks
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 6));   // 2 blocks: does not fit now
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 2));   // would fit, but arrived later
  Admission a = Admit(waiting, running, blocks, options);
  EXPECT_TRUE(a.refused.empty());
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0]->tokens.size(), 10u);
  EXPECT_EQ(waiting.size(), 2u);
  EXPECT_EQ(blocks.num_free(), 1);
  // max_running bounds admission even with blocks free.
  BlockAllocator more(64, 4);
  SeqQueue queue;
  SeqList run;
  for (int i = 0; i < 3; ++i) queue.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 4));
  options.max_running = 2;
  Admit(queue, run, more, options);
  EXPECT_EQ(run.size(), 2u);
  EXPECT_EQ(queue.size(), 1u);
}

TEST(Admit, AGangIsAdmittedWholeOrNotAtAll) {
  BlockAllocator blocks(5, 4);
  SchedulerOptions options;
  SeqQueue waiting;
  SeqList running;
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 8));  // 2 blocks
  auto job = PatchJob(8);
  waiting.push_back(SeqOf(job, 8));  // 2 + 2 blocks: 3 are left
  waiting.push_back(SeqOf(job, 8));
  Admit(waiting, running, blocks, options);
  EXPECT_EQ(running.size(), 1u);
  EXPECT_EQ(waiting.size(), 2u);
  EXPECT_EQ(blocks.num_free(), 3);  // the first of the gang gave its blocks back
  for (const auto& s : waiting) EXPECT_TRUE(s->blocks.empty());
}

TEST(Admit, RefusesWhatAnIdleCacheCannotHold) {
  BlockAllocator blocks(4, 4);
  SeqQueue waiting;
  SeqList running;
  auto big = NewJob(Job::Kind::kGenerate);
  waiting.push_back(SeqOf(big, 20));
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 3));
  Admission a = Admit(waiting, running, blocks, SchedulerOptions());
  ASSERT_EQ(a.refused.size(), 1u);
  EXPECT_EQ(a.refused[0], big);
  EXPECT_TRUE(waiting.empty());
  EXPECT_EQ(running.size(), 1u);  // the next one still runs
}

TEST(EnsureBlocks, PreemptsTheNewestBackToTheFrontOfTheQueue) {
  BlockAllocator blocks(4, 4);
  SeqQueue waiting;
  SeqList running;
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 8));
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 8));
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 1));
  Admit(waiting, running, blocks, SchedulerOptions());
  ASSERT_EQ(running.size(), 2u);
  ASSERT_EQ(blocks.num_free(), 0);
  // The oldest generated a token past its blocks: the newest goes back, recomputed later.
  Seq* oldest = running[0].get();
  Seq* newest = running[1].get();
  oldest->computed = 8;
  oldest->tokens.push_back(99);
  newest->computed = 8;
  EXPECT_EQ(EnsureBlocks(running, waiting, blocks), 1);
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].get(), oldest);
  EXPECT_EQ(oldest->blocks.size(), 3u);
  EXPECT_EQ(waiting.front().get(), newest);
  EXPECT_EQ(newest->computed, 0);
  EXPECT_TRUE(newest->blocks.empty());
  EXPECT_EQ(newest->job->stats.preemptions, 1);
}

TEST(EnsureBlocks, AGangGoesBackTogetherInItsOrder) {
  BlockAllocator blocks(6, 4);
  SeqQueue waiting;
  SeqList running;
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 8));
  auto job = PatchJob(8);
  waiting.push_back(SeqOf(job, 8));
  waiting.push_back(SeqOf(job, 8));
  Admit(waiting, running, blocks, SchedulerOptions());
  ASSERT_EQ(running.size(), 3u);
  const Seq* first = running[1].get();
  running[0]->computed = 8;
  running[0]->tokens.push_back(99);
  EXPECT_EQ(EnsureBlocks(running, waiting, blocks), 1);
  EXPECT_EQ(running.size(), 1u);
  ASSERT_EQ(waiting.size(), 2u);
  EXPECT_EQ(waiting[0].get(), first);
}

TEST(Admit, TakesTheLongestPublishedPrefixForGeneration) {
  BlockAllocator blocks(16, 4);
  SchedulerOptions options;
  SeqQueue waiting;
  SeqList running;
  auto first = SeqOf(NewJob(Job::Kind::kGenerate), 10);
  ASSERT_TRUE(blocks.Reserve(first->blocks, 10));
  blocks.Publish(first->blocks, first->tokens, 10, first->prefix);
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 12));  // shares 10 tokens
  waiting.push_back(SeqOf(NewJob(Job::Kind::kCapture), 12));   // captures compute everything
  Admission a = Admit(waiting, running, blocks, options);
  ASSERT_EQ(running.size(), 2u);
  EXPECT_EQ(running[0]->computed, 8);  // whole blocks only
  EXPECT_EQ(running[1]->computed, 0);
  EXPECT_EQ(a.prefix_hit_tokens, 8);
  EXPECT_EQ(a.prefix_hit_blocks, 2);
  EXPECT_EQ(running[0]->job->stats.prompt_tokens_cached, 8);
  // Without prefix caching nothing is taken.
  options.prefix_caching = false;
  SeqList run;
  waiting.push_back(SeqOf(NewJob(Job::Kind::kGenerate), 12));
  Admit(waiting, run, blocks, options);
  ASSERT_EQ(run.size(), 1u);
  EXPECT_EQ(run[0]->computed, 0);
}

}  // namespace
}  // namespace lensd
