// Interventions below the identities: the row-op reference on hand-made plans, validation
// errors that name the field, and layouts (pipeline, tensor parallel) equal to one device.
#include "engine/runtime/interventions.h"

#include <cmath>

#include "engine/model/weights.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "engine/backend/row_ops.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

RowOp Op(RowOpKind kind, RowOpPlan& plan, int64_t offset, int32_t n) {
  RowOp op;
  op.kind = kind;
  op.seg_begin = static_cast<int32_t>(plan.segments.size());
  plan.segments.push_back({offset, n, 0});
  op.seg_end = static_cast<int32_t>(plan.segments.size());
  op.n = n;
  return op;
}

TEST(RowOps, ElementwiseOpsTouchOnlyTheirSegments) {
  std::vector<float> x = {1, 2, 3, 4, 5, 6};
  RowOpPlan plan;
  RowOp scale = Op(RowOpKind::kScale, plan, 1, 2);
  scale.a = 10;
  RowOp add = Op(RowOpKind::kAdd, plan, 4, 2);
  add.a = 2, add.value = 0;
  plan.values = {0.5f, -1.0f};
  RowOp zero = Op(RowOpKind::kZero, plan, 0, 1);
  plan.ops = {scale, add, zero};
  ApplyRowOpsHost(x.data(), nullptr, plan);
  EXPECT_EQ(x, (std::vector<float>{0, 20, 30, 4, 6, 4}));
}

TEST(RowOps, ProjectRemovesTheDirectionAndSetsTheTarget) {
  std::vector<float> x = {3, 4, 1, 1};  // two vectors of 2
  RowOpPlan plan;
  RowOp op = Op(RowOpKind::kProject, plan, 0, 4);
  op.vec = 2, op.value = 0, op.a = 0;
  plan.values = {1, 0};  // d̂ = e0
  plan.ops = {op};
  ApplyRowOpsHost(x.data(), nullptr, plan);
  EXPECT_EQ(x, (std::vector<float>{0, 4, 0, 1}));
  plan.ops[0].a = 2;  // target: x·d̂ = 2 afterwards
  ApplyRowOpsHost(x.data(), nullptr, plan);
  EXPECT_EQ(x, (std::vector<float>{2, 4, 2, 1}));
}

TEST(RowOps, CopiesReadTheTensorBeforeAnyOpOrTheGivenSource) {
  std::vector<float> x = {1, 2, 3, 4};
  RowOpPlan plan;
  RowOp zero = Op(RowOpKind::kZero, plan, 0, 2);
  RowOp copy = Op(RowOpKind::kCopy, plan, 2, 2);
  copy.src_seg_begin = static_cast<int32_t>(plan.segments.size());
  plan.segments.push_back({0, 2, 0});
  copy.src_seg_end = static_cast<int32_t>(plan.segments.size());
  plan.ops = {zero, copy};  // the zero runs first, the copy still sees 1, 2
  ApplyRowOpsHost(x.data(), nullptr, plan);
  EXPECT_EQ(x, (std::vector<float>{0, 0, 1, 2}));
  const std::vector<float> source = {7, 8};
  ApplyRowOpsHost(x.data(), source.data(), plan);
  EXPECT_EQ(x, (std::vector<float>{0, 0, 7, 8}));
}

TEST(RowOps, SaeClampOnlyActiveLeavesInactiveVectorsAlone) {
  std::vector<float> x = {1, 0, -1, 0};
  RowOpPlan plan;
  RowOp op = Op(RowOpKind::kSaeClamp, plan, 0, 4);
  op.vec = 2, op.value = 0, op.a = 0, op.b = 0, op.c = 5, op.only_active = true;
  plan.values = {1, 0, /*u*/ 0, 1, /*b_dec*/ 0, 0};
  plan.ops = {op};
  ApplyRowOpsHost(x.data(), nullptr, plan);
  // f = 1 for the first vector: x += (5 - 1) u; f = 0 for the second: unchanged.
  EXPECT_EQ(x, (std::vector<float>{1, 4, -1, 0}));
}

TEST(RowOps, NoiseDependsOnItsKeyOnly) {
  EXPECT_EQ(NoiseSample(1, 0, 5, 9), NoiseSample(1, 0, 5, 9));
  EXPECT_NE(NoiseSample(1, 0, 5, 9), NoiseSample(1, 0, 5, 10));
  EXPECT_NE(NoiseSample(1, 0, 5, 9), NoiseSample(1, 1, 5, 9));
  EXPECT_NE(NoiseSample(1, 0, 5, 9), NoiseSample(1, 0, 6, 9));
  EXPECT_NE(NoiseSample(1, 0, 5, 9), NoiseSample(2, 0, 5, 9));
  double sum = 0, sq = 0;
  for (int e = 0; e < 100000; ++e) {
    const double v = NoiseSample(3, 0, 0, e);
    sum += v, sq += v * v;
  }
  EXPECT_NEAR(sum / 1e5, 0, 0.02);
  EXPECT_NEAR(sq / 1e5, 1, 0.02);
}

class ValidationTest : public ::testing::Test {
 protected:
  ModelConfig c_ = BuiltinConfig();  // 4 layers, 4 heads, 2 KV heads, d 128
  absl::Status Check(Intervention iv, std::vector<int> lengths = {5, 5}, bool generate = false) {
    return InterventionSet::Create(c_, {std::move(iv)}, lengths, generate, 64).status();
  }
  Intervention Make(const std::string& hook, InterventionOp op) {
    Intervention iv;
    iv.hook = *HookFromName(c_, hook);
    iv.op = op;
    return iv;
  }
  void ExpectError(const Intervention& iv, const std::string& needle,
                   std::vector<int> lengths = {5, 5}, bool generate = false) {
    EXPECT_TRUE(testing::FailsWith(Check(iv, lengths, generate),
                                   absl::StatusCode::kInvalidArgument, needle));
  }
};

TEST_F(ValidationTest, ErrorsNameTheFieldAndTheIntervention) {
  Intervention heads = Make("blocks.0.attn.hook_k", InterventionOp::kZero);
  heads.heads = {2};  // two KV heads
  ExpectError(heads, "interventions[0].heads[0] = 2 is out of range: blocks.0.attn.hook_k has 2 heads");
  Intervention resid_heads = Make("blocks.0.hook_resid_pre", InterventionOp::kZero);
  resid_heads.heads = {0};
  ExpectError(resid_heads, "interventions[0].heads applies to per-head hooks");
  Intervention keys = Make("blocks.0.hook_resid_pre", InterventionOp::kZero);
  keys.keys.kind = PositionSelector::Kind::kIndices, keys.keys.indices = {0};
  ExpectError(keys, "interventions[0].keys applies to attention maps");
  Intervention pos = Make("blocks.0.hook_resid_pre", InterventionOp::kZero);
  pos.positions.kind = PositionSelector::Kind::kIndices, pos.positions.indices = {1, -6};
  ExpectError(pos, "interventions[0].positions[1] = -6 is out of range for prompts[0] (5 tokens)");
  pos.positions.indices = {1, 1};
  ExpectError(pos, "positions[1] repeats position 1");
  pos.positions.kind = PositionSelector::Kind::kSlice, pos.positions.start = 4, pos.positions.stop = 2;
  ExpectError(pos, "interventions[0].positions selects no position of prompts[0]");
  pos.positions.kind = PositionSelector::Kind::kGenerated;
  ExpectError(pos, "applies to Generate only");
  Intervention value = Make("blocks.0.hook_resid_pre", InterventionOp::kSet);
  value.value = {{3, 128}, std::vector<float>(3 * 128, 1.0f)};
  ExpectError(value, "interventions[0].value of shape [3, 128] does not broadcast to the selected "
                     "slice [1, 5, 128] of prompts[0]");
  value.value = {{128}, std::vector<float>(128, NAN)};
  ExpectError(value, "interventions[0].value has non-finite values");
  Intervention dir = Make("blocks.0.hook_resid_pre", InterventionOp::kProject);
  dir.value = {{128}, std::vector<float>(128, 0.0f)};
  ExpectError(dir, "interventions[0].direction has zero norm");
  dir.value = {{100}, std::vector<float>(100, 1.0f)};
  ExpectError(dir, "interventions[0].direction has length 100");
  Intervention prompts = Make("blocks.0.hook_resid_pre", InterventionOp::kZero);
  prompts.prompts = {2};
  ExpectError(prompts, "interventions[0].prompts[0] = 2 is out of range: the request has 2");
}

TEST_F(ValidationTest, PatchNeedsAnotherPromptAndMatchingPositions) {
  Intervention patch = Make("blocks.0.hook_resid_pre", InterventionOp::kPatch);
  patch.source = 2;
  ExpectError(patch, "interventions[0].source = 2 is out of range");
  patch.source = 0, patch.prompts = {0};
  ExpectError(patch, "interventions[0].source = 0 patches prompts[0] from itself");
  patch.prompts = {1};
  ExpectError(patch, "selects 3 positions of source prompts[0] (3 tokens) but 5 of prompts[1]",
              {3, 5});
  patch.positions.kind = PositionSelector::Kind::kIndices, patch.positions.indices = {0, 2};
  EXPECT_TRUE(Check(patch, {3, 5}).ok());  // the source's positions default to the same list
  patch.positions.indices = {0, 4};
  ExpectError(patch, "interventions[0].positions[1] = 4 is out of range for source prompts[0]",
              {3, 5});
  ExpectError(patch, "patch applies to RunWithCache only", {5}, true);
  // Cycles at one hook are refused; the same pair at different hooks is fine.
  Intervention back = Make("blocks.0.hook_resid_pre", InterventionOp::kPatch);
  back.source = 1, back.prompts = {0};
  Intervention forward = back;
  forward.source = 0, forward.prompts = {1};
  auto cycle = InterventionSet::Create(c_, {forward, back}, {5, 5}, false, 5);
  EXPECT_NE(cycle.status().message().find("form a cycle"), std::string::npos) << cycle.status();
  back.hook = *HookFromName(c_, "blocks.1.hook_resid_pre");
  EXPECT_TRUE(InterventionSet::Create(c_, {forward, back}, {5, 5}, false, 5).ok());
}

TEST_F(ValidationTest, GenerateTakesOnlyLengthOneValuesOnOpenAxes) {
  Intervention add = Make("blocks.0.hook_resid_pre", InterventionOp::kAdd);
  add.value = {{2, 128}, std::vector<float>(256, 1.0f)};
  ExpectError(add, "does not broadcast to the selected slice [1, ?, 128] of the prompt (5 tokens)",
              {5}, true);
  add.positions.kind = PositionSelector::Kind::kIndices, add.positions.indices = {0, 30};
  EXPECT_TRUE(Check(add, {5}, true).ok());  // explicit positions, also beyond the prompt
  add.positions.indices = {0, 64};
  ExpectError(add, "positions[1] = 64 is out of range", {5}, true);
}

// A request's interventions give the same results on every layout (within 1e-5, as plain
// runs do), including ops on head-split hooks and attention maps under tensor parallelism.
TEST(InterventionLayouts, PipelineAndTensorParallelEqualOneDevice) {
  for (const auto& [family, devices, tp] :
       {std::tuple{"llama", "cpu:0,cpu:1", 2}, std::tuple{"llama", "cpu:0,cpu:1,cpu:2,cpu:3", 4},
        std::tuple{"gpt2", "cpu:0,cpu:1", 1}, std::tuple{"gpt_neox", "cpu:0,cpu:1", 2}}) {
    LoadOptions one, many;
    one.model_dir = many.model_dir = testing::FamilyDir(family);
    many.devices = devices, many.tensor_parallel = tp;
    auto a = Model::Load(one), b = Model::Load(many);
    ASSERT_TRUE(a.ok() && b.ok());
    const ModelConfig& c = (*a)->config();
    std::vector<Intervention> list(5);
    list[0].hook = *HookFromName(c, "blocks.0.attn.hook_z"), list[0].heads = {1};
    list[1].hook = *HookFromName(c, "blocks.1.attn.hook_v"), list[1].op = InterventionOp::kScale;
    list[1].factor = -2, list[1].heads = {0};
    list[2].hook = *HookFromName(c, "blocks.1.attn.hook_pattern"), list[2].heads = {2};
    list[2].op = InterventionOp::kPatch, list[2].source = 0;
    list[3].hook = *HookFromName(c, "blocks.0.mlp.hook_post"), list[3].op = InterventionOp::kProject;
    list[3].value = {{c.d_mlp}, std::vector<float>(c.d_mlp, 1.0f)};
    list[4].hook = *HookFromName(c, "blocks.1.hook_resid_post"), list[4].op = InterventionOp::kNoise;
    list[4].std = 0.3f, list[4].seed = 11;
    const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7, 8, 9, 10}, {50, 60, 70, 80, 90, 100}};
    // With the patch the batch runs whole; without it a pipeline runs micro-batches.
    const std::vector<Intervention> no_patch = {list[0], list[1], list[3], list[4]};
    for (const std::vector<Intervention>& ops : {list, no_patch}) {
      auto set = InterventionSet::Create(c, ops, {6, 6}, false, 6);
      ASSERT_TRUE(set.ok()) << set.status();
      auto ra = RunWithCache(**a, prompts, HookSelection::All(c), set->get());
      auto rb = RunWithCache(**b, prompts, HookSelection::All(c), set->get());
      ASSERT_TRUE(ra.ok() && rb.ok());
      for (int p = 0; p < 2; ++p) {
        EXPECT_TRUE(testing::AllClose("logits", (*rb)[p].logits.view(), (*ra)[p].logits.view(), 1e-5))
            << family << " " << devices;
        for (auto& [name, buf] : (*ra)[p].cache) {
          EXPECT_TRUE(testing::AllClose(name, (*rb)[p].cache[name].view(), buf.view(), 1e-5))
              << family << " " << devices;
        }
      }
      auto plain = RunWithCache(**a, prompts, HookSelection::All(c), nullptr);
      EXPECT_FALSE(testing::AllClose("changed", (*plain)[1].logits.view(), (*ra)[1].logits.view(), 1e-3));
    }
  }
}

}  // namespace
}  // namespace lensd
