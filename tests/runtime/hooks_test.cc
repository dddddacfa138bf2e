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

TEST(Hooks, GlobsMatchLikeShellPatternsWithoutBacktrackingBlowUp) {
  const ModelConfig c = BuiltinConfig();
  EXPECT_EQ(HookSelection::Parse(c, {"blocks.?.hook_resid_p*"})->hooks().size(), 8u);
  EXPECT_EQ(HookSelection::Parse(c, {"*hook_z"})->hooks().size(), 4u);
  EXPECT_EQ(HookSelection::Parse(c, {"*"})->hooks().size(), AllHooks(c).size());
  EXPECT_FALSE(HookSelection::Parse(c, {"blocks.*.hook_z?"}).ok());
  // Exponential for backtracking matchers (fnmatch); linear here. Matches nothing.
  std::string evil;
  for (int i = 0; i < 60; ++i) evil += "*b";
  evil += "X";
  EXPECT_FALSE(HookSelection::Parse(c, {evil}).ok());
}

// D2 of the hardening audit: a 1 MiB unknown name cost seconds of edit distance and came back
// whole in the status message. Now it is refused by length and quoted in at most 100 bytes.
TEST(Hooks, HostileNamesAreRefusedCheaplyAndQuotedShort) {
  const ModelConfig c = BuiltinConfig();
  const std::string huge(1 << 20, 'x');
  auto long_name = HookSelection::Parse(c, {"hook_embed", huge});
  ASSERT_FALSE(long_name.ok());
  EXPECT_NE(long_name.status().message().find("pattern [1] is 1048576 bytes"), std::string::npos);
  EXPECT_LT(long_name.status().message().size(), 200u);
  const std::string unknown = "blocks.0.hook_resid_pots" + std::string(200, '\xff');
  auto bad = HookSelection::Parse(c, {unknown});
  ASSERT_FALSE(bad.ok());
  EXPECT_LT(bad.status().message().size(), 600u) << bad.status();
  EXPECT_NE(bad.status().message().find("\\xff"), std::string::npos);
  EXPECT_NE(bad.status().message().find("closest valid names: blocks.0.hook_resid_post"),
            std::string::npos);
  std::vector<std::string> globs(kMaxHookGlobs + 1, "blocks.*.hook_z");
  EXPECT_FALSE(HookSelection::Parse(c, globs).ok());
  std::vector<std::string> exact(kMaxHookGlobs + 1, "blocks.0.attn.hook_z");  // exact: no limit
  EXPECT_TRUE(HookSelection::Parse(c, exact).ok());
  EXPECT_FALSE(HookSelection::Parse(c, std::vector<std::string>(kMaxHookPatterns + 1, "")).ok());
}

}  // namespace
}  // namespace lensd
