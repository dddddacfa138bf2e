// Cached decode equals full recomputation; a sequence's results do not depend on the batch
// it runs in or on the KV block size.
#include <cstring>

#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

class PerFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(PerFamily, CachedDecodeEqualsRecompute) {
  auto model = testing::LoadFamily(GetParam(), /*block_size=*/4);  // forces many block boundaries
  const int V = model->config().vocab_size;
  std::vector<int32_t> seq = {3, 14, 15, 92, 65, 35};
  std::vector<int32_t> table;
  ASSERT_TRUE(model->blocks().Reserve(table, 30));
  std::vector<SeqInput> step = {{seq, 0, &table, false}};
  for (int i = 0; i < 10; ++i) {
    auto cached = model->Forward(step, nullptr);
    ASSERT_TRUE(cached.ok()) << cached.status();
    std::vector<int32_t> full(seq);
    auto recomputed = RunWithCache(*model, full, HookSelection::None(model->config()));
    ASSERT_TRUE(recomputed.ok());
    TensorView last = recomputed->logits.view().Reshaped({int64_t(full.size()), V}).Rows(full.size() - 1, full.size());
    EXPECT_TRUE(testing::AllClose("step " + std::to_string(i), cached->logits.view(), last, 1e-5));
    const float* l = cached->logits.As<float>();
    const int32_t next = static_cast<int32_t>(std::max_element(l, l + V) - l);
    step[0].start_pos += static_cast<int>(step[0].tokens.size());
    step[0].tokens = {next};
    seq.push_back(next);
    // Longrope past its switch: every position again with the long frequencies (as Generate
    // and the scheduler do); cached decode goes on from there.
    if (step[0].start_pos == RopeSwitch(model->config())) step[0] = {seq, 0, &table, false};
  }
  model->blocks().Release(table);
}

TEST_P(PerFamily, BatchCompositionDoesNotChangeResults) {
  auto model = testing::LoadFamily(GetParam());
  const std::vector<int32_t> a = {5, 6, 7, 8, 9, 10, 11}, b = {400, 3}, c = {1, 2, 3, 4};
  CacheCollector alone(HookSelection::All(model->config()), 1);
  std::vector<int32_t> ta, tb, tc;
  auto& blocks = model->blocks();
  ASSERT_TRUE(blocks.Reserve(ta, 7) && blocks.Reserve(tb, 2) && blocks.Reserve(tc, 4));
  auto single = model->Forward({{a, 0, &ta, true}}, &alone);
  ASSERT_TRUE(single.ok());
  // The same sequence second in a batch with others, one of them mid-decode.
  auto prefill_c = model->Forward({{c, 0, &tc, false}}, nullptr);
  ASSERT_TRUE(prefill_c.ok());
  struct OnlySecond : CacheCollector {
    using CacheCollector::CacheCollector;
    bool Wants(int seq, HookId id) const override { return seq == 1 && CacheCollector::Wants(seq, id); }
  } batched(HookSelection::All(model->config()), 3);
  auto multi = model->Forward({{b, 0, &tb, false}, {a, 0, &ta, true}, {{42}, 4, &tc, false}}, &batched);
  ASSERT_TRUE(multi.ok());
  const int V = model->config().vocab_size;
  TensorView mine = multi->logits.view().Reshaped({multi->logits.shape()[0], V}).Rows(1, 8);
  EXPECT_EQ(0, std::memcmp(mine.data, single->logits.As<float>(), 7 * V * sizeof(float)));
  ASSERT_EQ(batched.cache(1).size(), alone.cache(0).size());
  for (auto& [name, buf] : alone.cache(0)) {
    EXPECT_TRUE(testing::AllClose(name, batched.cache(1)[name].view(), buf.view(), 0)) << name;
  }
  blocks.Release(ta), blocks.Release(tb), blocks.Release(tc);
  EXPECT_EQ(blocks.num_free(), blocks.num_blocks());
}

INSTANTIATE_TEST_SUITE_P(Golden, PerFamily,
                         ::testing::Values("gpt2", "llama", "qwen2", "gpt_neox", "qwen3", "olmo2",
                                           "gemma2", "gemma3_text", "phi3", "phi3_longrope",
                                           "mixtral", "qwen3_moe", "qwen3_moe_sparse"));

TEST(Generation, BuiltinModelRunsAndStopsAtLimits) {
  LoadOptions o;
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  SamplingParams p;
  p.max_new_tokens = 8;
  p.ignore_eos = true;
  auto ids = (*model)->tokenizer()->Encode("hello");
  auto r = Generate(**model, std::vector<int32_t>(ids->begin(), ids->end()), p);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens.size(), 8u);
  EXPECT_EQ(r->finish, FinishReason::kLength);
  p.stop_ids = {r->tokens[2]};
  auto stopped = Generate(**model, std::vector<int32_t>(ids->begin(), ids->end()), p);
  EXPECT_EQ(stopped->finish, FinishReason::kStop);
  EXPECT_LE(stopped->tokens.size(), 3u);
  EXPECT_EQ(Generate(**model, {300}, p).status().code(), absl::StatusCode::kInvalidArgument);
  // A prompt 3 tokens short of the context: 3 new tokens fill it, and the reason says so.
  const int room = 3;
  std::vector<int32_t> near_full((*model)->config().max_positions - room, 65);
  auto full = Generate(**model, near_full, p);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->tokens.size(), static_cast<size_t>(room));
  EXPECT_EQ(full->finish, FinishReason::kContext);
  SamplingParams bad;
  bad.top_p = 0;
  EXPECT_EQ(Generate(**model, {5}, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Generation, KvExhaustionIsResourceExhausted) {
  LoadOptions o;
  o.kv_tokens = 32;
  o.block_size = 16;
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok());
  std::vector<int32_t> prompt(40, 7);
  auto r = RunWithCache(**model, prompt, HookSelection::None((*model)->config()));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*model)->blocks().num_free(), 2);
}

}  // namespace
}  // namespace lensd

namespace lensd {
namespace {

TEST(Generation, ThreadCountDoesNotChangeResults) {
  LoadOptions o;
  o.model_dir = testing::GoldenDir() + "/gpt2";
  o.threads = 1;
  auto one = Model::Load(o);
  ASSERT_TRUE(one.ok());
  const std::vector<int32_t> ids = {5, 17, 300, 2, 999, 41, 7, 8, 9, 10, 11};
  auto a = RunWithCache(**one, ids, HookSelection::All((*one)->config()));
  o.threads = 3;  // applies process-wide to the CPU backend's loops
  auto three = Model::Load(o);
  ASSERT_TRUE(three.ok());
  auto b = RunWithCache(**three, ids, HookSelection::All((*three)->config()));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(testing::AllClose("logits", b->logits.view(), a->logits.view(), 0));
  for (auto& [name, buf] : a->cache) {
    EXPECT_TRUE(testing::AllClose(name, b->cache[name].view(), buf.view(), 0)) << name;
  }
}

}  // namespace
}  // namespace lensd
