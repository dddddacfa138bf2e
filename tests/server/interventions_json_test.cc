// The CLIs' interventions JSON: errors a user can act on (where the JSON breaks, every field an
// op accepts).
#include "cli/interventions_json.h"

#include "engine/core/status.h"
#include "engine/model/json_fields.h"
#include "engine/model/weights.h"
#include "server/interventions_wire.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using C = absl::StatusCode;

TEST(InterventionsJson, BrokenJsonNamesLineAndColumn) {
  WireInterventions out;
  const absl::Status s =
      ParseInterventionsJson("[\n  {\"op\": \"zero\",\n   \"hook\": x}\n]", ".", &out);
  EXPECT_TRUE(testing::FailsWith(s, C::kInvalidArgument, "not valid JSON at line 3, column 12"))
      << s;
  EXPECT_TRUE(testing::FailsWith(s, C::kInvalidArgument, "invalid literal")) << s;
  EXPECT_EQ(WhyNotJson("{\"a\": 1,}").substr(0, 36), "not valid JSON at line 1, column 9: ");
  EXPECT_EQ(WhyNotJson("").substr(0, 36), "not valid JSON at line 1, column 1: ");
}

TEST(InterventionsJson, UnknownFieldListsEveryFieldOfTheOpSelectorsIncluded) {
  WireInterventions out;
  const absl::Status s =
      ParseInterventionsJson(R"([{"op": "zero", "hook": "hook_embed", "head": 2}])", ".", &out);
  EXPECT_TRUE(testing::FailsWith(
      s, C::kInvalidArgument,
      "interventions[0] has unknown field 'head' for op zero (its fields: features, heads, hook, "
      "keys, op, positions, prompts)"))
      << s;
  const absl::Status scale =
      ParseInterventionsJson(R"([{"op": "scale", "hook": "hook_embed", "fator": 2}])", ".", &out);
  EXPECT_TRUE(testing::FailsWith(scale, C::kInvalidArgument, "factor, features, heads, hook"))
      << scale;
}

absl::StatusOr<std::shared_ptr<const InterventionSet>> FromJson(const std::string& text,
                                                               InterventionLimits limits = {}) {
  WireInterventions wire;
  RETURN_IF_ERROR(ParseInterventionsJson(text, ".", &wire));
  return ToInterventionSet(wire, BuiltinConfig(), {6}, false, 6, limits);
}

// Hooks take names_filter's globs and layer ranges: one op per matching hook, counted (and
// its values counted) against the limits after expansion; errors name the request's entry
// and the hook.
TEST(InterventionsJson, HookPatternsExpandToEveryMatchingHook) {
  auto all = FromJson(R"([{"op": "zero", "hook": "blocks.*.hook_resid_post"},
                          {"op": "scale", "hook": "blocks.1-2.attn.hook_z", "factor": 2}])");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ((*all)->OpCounts()[static_cast<int>(InterventionOp::kZero)], 4);  // 4 layers
  EXPECT_EQ((*all)->OpCounts()[static_cast<int>(InterventionOp::kScale)], 2);
  EXPECT_TRUE((*all)->Touches({HookPoint::kResidPost, 3}));
  EXPECT_FALSE((*all)->Touches({HookPoint::kZ, 0}));
  InterventionLimits three;
  three.max_interventions = 3;
  EXPECT_TRUE(testing::FailsWith(
      FromJson(R"([{"op": "zero", "hook": "blocks.*.hook_resid_post"}])", three).status(),
      C::kResourceExhausted, "4 entries (hook patterns expanded)"));
  std::string vector = "0.5";  // d_model (128) values: 512 bytes a copy
  for (int i = 1; i < 128; ++i) vector += ", 0.5";
  const std::string add =
      R"([{"op": "add", "hook": "blocks.*.hook_resid_pre", "value": [)" + vector + "]}]";
  ASSERT_TRUE(FromJson(add).ok());
  InterventionLimits small;
  small.max_bytes = 3 * 512;  // one copy fits, four do not
  EXPECT_TRUE(testing::FailsWith(FromJson(add, small).status(), C::kResourceExhausted,
                                 "2048 bytes of values (hook patterns expanded)"));
  EXPECT_TRUE(testing::FailsWith(
      FromJson(R"([{"op": "zero", "hook": "blocks.9-12.hook_resid_pre"}])").status(),
      C::kInvalidArgument, "interventions[0].hook: unknown hook"));
  EXPECT_TRUE(testing::FailsWith(
      FromJson(R"([{"op": "zero", "hook": "hook_embed"},
                   {"op": "zero", "hook": "blocks.*.attn.hook_z", "heads": [7]}])")
          .status(),
      C::kInvalidArgument, "interventions[1] (at blocks.0.attn.hook_z)"));
}

}  // namespace
}  // namespace lensd
