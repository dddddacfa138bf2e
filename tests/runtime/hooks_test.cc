#include "engine/runtime/hooks.h"

#include "engine/model/weights.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

TEST(Hooks, NamesAndShapesFollowTransformerLens) {
  ModelConfig c = BuiltinConfig();
  EXPECT_EQ(HookName({HookPoint::kRotK, 3}), "blocks.3.attn.hook_rot_k");
  EXPECT_EQ(HookName({HookPoint::kUnembedOut, -1}), "unembed.hook_out");
  EXPECT_EQ(HookShape(c, HookPoint::kK, 5), (Shape{1, 5, 2, 32}));
  EXPECT_EQ(HookShape(c, HookPoint::kPattern, 5), (Shape{1, 4, 5, 5}));
  EXPECT_EQ(HookShape(c, HookPoint::kLn2Scale, 5), (Shape{1, 5, 1}));
  EXPECT_EQ(HookShapeFormula(c, HookPoint::kQ), "[1, P, 4, 32]");
  // Llama-style: rotary and gated hooks exist, learned positions do not.
  auto all = AllHooks(c);
  auto has = [&](HookId id) { return std::find(all.begin(), all.end(), id) != all.end(); };
  EXPECT_TRUE(has({HookPoint::kMlpPreLinear, 0}));
  EXPECT_FALSE(has({HookPoint::kPosEmbed, -1}));
  EXPECT_EQ(all.size(), 1u + 4 * 20 + 4);  // embed; 20 per block (no pos, no resid_mid absent); 4 final
}

TEST(Hooks, SelectionKnowsWhenItHoldsAttentionMaps) {
  const ModelConfig c = BuiltinConfig();
  EXPECT_TRUE(HookSelection::All(c).HasAttentionMaps());
  EXPECT_FALSE(HookSelection::None(c).HasAttentionMaps());
  EXPECT_FALSE(HookSelection::Parse(c, {"blocks.*.hook_resid_post"})->HasAttentionMaps());
  EXPECT_TRUE(HookSelection::Parse(c, {"blocks.1.attn.hook_attn_scores"})->HasAttentionMaps());
  EXPECT_TRUE(HookSelection::Parse(c, {"hook_embed", "blocks.0-1.attn.hook_pattern"})
                  ->HasAttentionMaps());
}

TEST(Hooks, SelectionGlobsRangesAndSuggestions) {
  ModelConfig c = BuiltinConfig();
  auto glob = HookSelection::Parse(c, {"blocks.*.hook_resid_post"});
  ASSERT_TRUE(glob.ok());
  EXPECT_EQ(glob->hooks().size(), 4u);
  auto range = HookSelection::Parse(c, {"blocks.1-2.attn.hook_*", "hook_embed"});
  ASSERT_TRUE(range.ok());
  EXPECT_TRUE(range->Contains({HookPoint::kPattern, 2}));
  EXPECT_FALSE(range->Contains({HookPoint::kPattern, 0}));
  EXPECT_TRUE(range->Contains({HookPoint::kEmbed, -1}));
  EXPECT_EQ(range->hooks().size(), 2u * 8 + 1);  // 8 attn.* hooks per block
  auto bad = HookSelection::Parse(c, {"blocks.0.hook_resid_pos"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("blocks.0.hook_resid_post"), std::string::npos);
  EXPECT_FALSE(HookSelection::Parse(c, {"blocks.9.hook_resid_pre"}).ok());
}

}  // namespace
}  // namespace lensd
