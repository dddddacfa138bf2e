// Prefix caching: the block manager's references, publication, matching and eviction; and on
// every golden family, a sequence that takes a cached prefix computes the bits of a cold run.
#include <cstring>

#include "engine/runtime/kv_cache.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (seed * 131 + i * 17) % 997;
  return t;
}

TEST(BlockAllocator, PublishedBlocksAreSharedAndEvictedLeastRecentlyUsedFirst) {
  BlockAllocator a(6, 4);
  std::vector<int32_t> first;
  const auto tokens = Tokens(10, 1);
  ASSERT_TRUE(a.Reserve(first, 10));  // 3 blocks; 8 positions in full blocks
  a.Publish(first, tokens, 10, {});
  EXPECT_EQ(a.num_cached(), 2);
  std::vector<int32_t> second;
  EXPECT_EQ(a.MatchPrefix(tokens, {}, 9, second), 8);
  EXPECT_EQ(second, std::vector<int32_t>(first.begin(), first.begin() + 2));
  EXPECT_EQ(a.num_free(), 3);  // shared blocks count once
  // Another key (an intervention reaching block 1) shares block 0 only.
  std::vector<int32_t> keyed;
  EXPECT_EQ(a.MatchPrefix(tokens, {4, 77}, 9, keyed), 4);
  a.Release(keyed);
  // A whole-sequence key (longrope's long frequencies) shares nothing with plain blocks.
  std::vector<int32_t> other_plain;
  EXPECT_EQ(a.MatchPrefix(tokens, {4, 77, 5}, 9, other_plain), 0);
  // A different token in block 1 matches block 0 only; a cap limits the match.
  auto other = tokens;
  other[5] = 999;
  std::vector<int32_t> third;
  EXPECT_EQ(a.MatchPrefix(other, {}, 9, third), 4);
  a.Release(third);
  std::vector<int32_t> capped;
  EXPECT_EQ(a.MatchPrefix(tokens, {}, 7, capped), 4);
  a.Release(capped);
  a.Release(first);
  a.Release(second);
  EXPECT_EQ(a.num_free(), 6);
  EXPECT_EQ(a.num_cached(), 2);  // waiting for reuse
  // Reserving everything evicts the cached blocks.
  std::vector<int32_t> all;
  ASSERT_TRUE(a.Reserve(all, 24));
  EXPECT_EQ(a.num_cached(), 0);
  EXPECT_EQ(a.evicted(), 2);
  std::vector<int32_t> none;
  EXPECT_EQ(a.MatchPrefix(tokens, {}, 9, none), 0);
  EXPECT_FALSE(a.Reserve(none, 1));
  a.Release(all);
  EXPECT_EQ(a.num_free(), 6);
}

class PrefixHitTest : public ::testing::TestWithParam<std::string> {};

// Sequence A computes 40 tokens and publishes them; sequence B (the same 37 then 3 others)
// takes the cached blocks of its first 32 positions and computes the rest: its logits equal a
// cold run of B, bit for bit.
TEST_P(PrefixHitTest, AHitEqualsAColdRunBitForBit) {
  auto model = testing::LoadFamily(GetParam(), /*block_size=*/8);
  ASSERT_NE(model, nullptr);
  Model& m = *model;
  BlockAllocator& blocks = m.blocks();
  const auto a = Tokens(40, 3);
  auto b = a;
  b[37] = 5, b[38] = 6, b[39] = 7;
  std::vector<int32_t> ta, tb, cold;
  ASSERT_TRUE(blocks.Reserve(ta, 40));
  ASSERT_TRUE(m.Forward({{a, 0, &ta, false}}, nullptr).ok());
  blocks.Publish(ta, a, 40, {});
  const int hit = blocks.MatchPrefix(b, {}, 39, tb);
  ASSERT_EQ(hit, 32);
  ASSERT_TRUE(blocks.Reserve(tb, 40));
  auto warm = m.Forward({{std::vector<int32_t>(b.begin() + hit, b.end()), hit, &tb, true}}, nullptr);
  ASSERT_TRUE(blocks.Reserve(cold, 40));
  auto full = m.Forward({{b, 0, &cold, true}}, nullptr);
  ASSERT_TRUE(warm.ok() && full.ok());
  const int64_t V = m.config().vocab_size;
  // The warm run computed rows 32..39; they equal rows 32..39 of the cold run.
  EXPECT_EQ(std::memcmp(warm->logits.As<float>(), full->logits.As<float>() + 32 * V, 8 * V * 4), 0);
  blocks.Release(ta), blocks.Release(tb), blocks.Release(cold);
  EXPECT_EQ(blocks.num_free(), blocks.num_blocks());
}

INSTANTIATE_TEST_SUITE_P(Families, PrefixHitTest,
                         ::testing::Values("gpt2", "llama", "qwen2", "gpt_neox", "qwen3", "olmo2",
                                           "gemma2", "gemma3_text", "phi3", "phi3_longrope",
                                           "mixtral", "qwen3_moe", "qwen3_moe_sparse"));

}  // namespace
}  // namespace lensd
