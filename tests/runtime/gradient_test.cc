// Activation gradients (RunWithGradients) on every dense family against central finite
// differences of the model itself: the derivative of the objective along one coordinate of
// hook N is (obj(N + h·e) − obj(N − h·e)) / 2h, with N + h·e made by an `add` intervention at
// N — the value N passes downstream, which is what N_grad is the gradient of. Checked at the
// largest and at random coordinates of every hook of the first and last layer and the
// model-level hooks, for the loss and a logit difference; plus batch invariance bit for bit
// and the refusals.
#include <cmath>
#include <random>

#include "engine/runtime/generate.h"
#include "engine/runtime/memory_plan.h"
#include "engine/runtime/objective.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

class GradientTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = testing::LoadFamily(GetParam());
    ASSERT_NE(model_, nullptr);
    prompts_ = {testing::ReferencePrompt(GetParam(), 0)};
  }
  const ModelConfig& c() const { return model_->config(); }
  int Length(int p) const { return static_cast<int>(prompts_[p].size()); }

  // The hooks whose gradients are checked: model-level ones and those of the first and last
  // block that have gradients.
  std::vector<HookId> Checked() const {
    std::vector<HookId> out;
    for (HookId id : AllHooks(c())) {
      if (!HasGradient(id.point)) continue;
      if (id.layer == -1 || id.layer == 0 || id.layer == c().n_layers - 1) out.push_back(id);
    }
    return out;
  }

  // `edits_` and then `more` as one validated set for prompts_.
  std::shared_ptr<const InterventionSet> Set(std::vector<Intervention> more = {}) const {
    std::vector<Intervention> list = edits_;
    list.insert(list.end(), more.begin(), more.end());
    if (list.empty()) return nullptr;
    std::vector<int> lengths;
    for (const auto& ids : prompts_) lengths.push_back(static_cast<int>(ids.size()));
    auto set = InterventionSet::Create(c(), list, lengths, false, 0);
    EXPECT_TRUE(set.ok()) << set.status();
    return set.ok() ? *set : nullptr;
  }

  // Prompt p's objective with `edits_`, then `delta` added at flat coordinate `at` of its
  // hook `id`'s TransformerLens value ([1, P, ...], or [1, H, P, P] for attention maps).
  double ObjectiveWith(const Objective& o, int p, HookId id, int64_t at, float delta) {
    const int64_t P = Length(p);
    const Shape shape = HookShape(c(), id.point, P);
    const int axis = PositionAxis(id.point);
    std::vector<int64_t> dims = shape.ToVector();
    const int64_t inner = shape.NumElements() / (dims[0] * dims[axis]) / (axis == 2 ? dims[1] : 1);
    const int64_t position = at / inner % P;  // the query row of a map
    dims[axis] = 1;
    Intervention iv;
    iv.hook = id;
    iv.op = InterventionOp::kAdd;
    iv.prompts = {p};
    iv.positions.kind = PositionSelector::Kind::kIndices;
    iv.positions.indices = {static_cast<int>(position)};
    iv.value.shape = dims;
    iv.value.data.assign(static_cast<size_t>(Shape::FromVector(dims).NumElements()), 0.0f);
    // Maps: [head][key] of the one query row; else the row's elements.
    iv.value.data[axis == 2 ? at / (P * P) * P + at % P : at % inner] = delta;
    const bool hook_dot = o.kind == Objective::Kind::kHookDot;
    auto selection = HookSelection::Parse(c(), {HookName(o.hook)});
    auto r = RunWithCache(*model_, prompts_, hook_dot ? *selection : HookSelection::None(c()),
                          Set({iv}).get());
    EXPECT_TRUE(r.ok()) << r.status();
    if (hook_dot) {
      return HookDotValue(o, (*r)[p].cache.at(HookName(o.hook)).As<float>(), Length(p));
    }
    std::vector<float> grad(prompts_[p].size() * c().vocab_size);
    auto v = ObjectiveAndGradient(o, (*r)[p].logits.As<float>(), prompts_[p], c().vocab_size,
                                  grad.data());
    EXPECT_TRUE(v.ok()) << v.status();
    return *v;
  }

  // A coordinate of hook `id` whose value flows downstream: for the maps, `at` if its key is
  // visible to its query (the layer's captured scores are finite there: causal and window
  // masks), else the query's own key (masked entries have gradient 0 by definition).
  static int64_t Visible(const CacheResult& r, HookId id, int64_t at, int64_t P) {
    if (!IsAttentionMap(id.point)) return at;
    if (!Masked(r, id, at)) return at;
    return at - at % P + at / P % P;
  }
  static bool Masked(const CacheResult& r, HookId id, int64_t at) {
    const Buffer& scores = r.cache.at(HookName({HookPoint::kAttnScores, id.layer}));
    return std::isinf(scores.As<float>()[at]);
  }

  // Every prompt's N_grad of `hooks` (default: Checked()) at its largest and two random
  // coordinates against central differences of its objective, with `edits_` in place.
  void ExpectFiniteDifferences(const Objective& o, std::vector<HookId> hooks = {}) {
    if (hooks.empty()) hooks = Checked();
    auto run = RunWithGradients(*model_, prompts_, HookSelection::All(c()), o, Set().get());
    ASSERT_TRUE(run.ok()) << run.status();
    std::mt19937 rng(5);
    for (int p = 0; p < static_cast<int>(prompts_.size()); ++p) {
      const CacheResult& r = (*run)[p];
      ASSERT_TRUE(r.objective.has_value());
      std::vector<float> unused(prompts_[p].size() * c().vocab_size);
      EXPECT_NEAR(*r.objective,
                  o.kind == Objective::Kind::kHookDot
                      ? HookDotValue(o, r.cache.at(HookName(o.hook)).As<float>(), Length(p))
                      : *ObjectiveAndGradient(o, r.logits.As<float>(), prompts_[p], c().vocab_size,
                                              unused.data()),
                  1e-9);
      for (HookId id : hooks) ExpectHook(o, p, r, id, rng);
    }
  }

  void ExpectHook(const Objective& o, int p, const CacheResult& r, HookId id, std::mt19937& rng) {
    const std::string name = HookName(id) + "_grad";
    ASSERT_EQ(r.cache.count(name), 1u) << name;
    const Buffer& g = r.cache.at(name);
    ASSERT_EQ(g.shape(), r.cache.at(HookName(id)).shape()) << name;
    const float* grad = g.As<float>();
    const int64_t n = g.shape().NumElements();
    int64_t top = 0;
    double scale = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (std::fabs(grad[i]) > scale) scale = std::fabs(grad[i]), top = i;
    }
    if (IsAttentionMap(id.point)) {  // masked keys: exactly 0
      for (int64_t e = 0; e < n; ++e) {
        if (Masked(r, id, e)) ASSERT_EQ(grad[e], 0.0f) << name << " at " << e;
      }
    }
    const int64_t P = Length(p);
    for (int64_t at : {top, Visible(r, id, static_cast<int64_t>(rng() % n), P),
                       Visible(r, id, static_cast<int64_t>(rng() % n), P)}) {
      // Mixtures choose experts discontinuously: a step that flips a token's top-k measures
      // the jump, not the slope, so theirs is smaller.
      const float step = HasMoe(c()) ? 1e-3f : 1e-2f;
      const float h = step * std::max(1.0f, std::fabs(r.cache.at(HookName(id)).As<float>()[at]));
      const double numeric =
          (ObjectiveWith(o, p, id, at, h) - ObjectiveWith(o, p, id, at, -h)) / (2.0 * h);
      EXPECT_NEAR(numeric, grad[at], 2e-2 * scale + 1e-4)
          << "prompt " << p << " " << name << " at " << at << " (largest |grad| " << scale << ")";
    }
  }

  std::unique_ptr<Model> model_;
  std::vector<std::vector<int32_t>> prompts_;
  std::vector<Intervention> edits_;  // in place for every run
};

TEST_P(GradientTest, LossMatchesFiniteDifferencesAtEveryHook) {
  ExpectFiniteDifferences(Objective{});
}

TEST_P(GradientTest, LogitDiffMatchesFiniteDifferencesAtEveryHook) {
  Objective o;
  o.kind = Objective::Kind::kLogitDiff;
  o.answer = {5, 9}, o.wrong = {7};
  o.positions = {-1, 2};
  ExpectFiniteDifferences(o);
}

// ⟨hook, direction⟩ objectives: at attention heads (z of the first layer, two positions)
// and at the last layer's residual output; hooks after them get gradient 0.
TEST_P(GradientTest, HookDotMatchesFiniteDifferencesAtEveryHook) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (HookId at : {HookId{HookPoint::kZ, 0}, HookId{HookPoint::kResidPost, c().n_layers - 1}}) {
    Objective o;
    o.kind = Objective::Kind::kHookDot;
    o.hook = at;
    o.direction.resize(static_cast<size_t>(PositionWidth(c(), at.point)));
    for (float& x : o.direction) x = normal(rng);
    if (at.point == HookPoint::kZ) o.positions = {-1, 1};
    ExpectFiniteDifferences(o);
  }
}

TEST_P(GradientTest, APromptsGradientsAreTheSameBitsAloneAndBatched) {
  const std::vector<int32_t> other = {3, 14, 15, 92, 65};
  const Objective loss;
  auto alone = RunWithGradients(*model_, prompts_, HookSelection::All(c()), loss);
  auto batched = RunWithGradients(*model_, {other, prompts_[0]}, HookSelection::All(c()), loss);
  ASSERT_TRUE(alone.ok() && batched.ok());
  for (const auto& [name, buffer] : (*alone)[0].cache) {
    EXPECT_TRUE(testing::AllClose(name, (*batched)[1].cache.at(name).view(), buffer.view(), 0));
  }
  EXPECT_EQ(*(*alone)[0].objective, *(*batched)[1].objective);
}

INSTANTIATE_TEST_SUITE_P(Families, GradientTest,
                         ::testing::Values("gpt2", "gpt_neox", "llama", "qwen2", "gemma2",
                                           "gemma3_text", "qwen3", "olmo2", "phi3", "phi3_longrope",
                                           "mixtral", "qwen3_moe", "qwen3_moe_sparse"));

// The gradient rules through interventions (DESIGN.md "Gradients"), against finite
// differences of the edited model: at every checked hook, with the edits in place.
class GradientRuleTest : public GradientTest {
 protected:
  // An op at `hook` over `positions` (empty: all); vectors filled from a fixed seed.
  Intervention Edit(HookId hook, InterventionOp op, std::vector<int> positions = {}) {
    Intervention iv;
    iv.hook = hook;
    iv.op = op;
    if (!positions.empty()) {
      iv.positions.kind = PositionSelector::Kind::kIndices;
      iv.positions.indices = std::move(positions);
    }
    return iv;
  }
  FloatTensor Random(int64_t n, float scale) {
    FloatTensor t{{n}, std::vector<float>(static_cast<size_t>(n))};
    std::normal_distribution<float> normal(0.0f, scale);
    for (float& x : t.data) x = normal(rng_);
    return t;
  }
  std::mt19937 rng_{11};
};

TEST_P(GradientRuleTest, CutScaleAddAndNoisePassAsTheirRules) {
  using P = HookPoint;
  const int64_t D = c().d_model;
  Intervention zero = Edit({P::kZ, 0}, InterventionOp::kZero, {1});
  zero.heads = {0};
  Intervention set = Edit({P::kMlpPost, 0}, InterventionOp::kSet, {2});
  set.value = {{1}, {0.3f}};
  Intervention scale = Edit({P::kAttnOut, 0}, InterventionOp::kScale);
  scale.factor = 0.5f;
  Intervention add = Edit({P::kMlpOut, 0}, InterventionOp::kAdd);
  add.value = Random(D, 0.5f);
  Intervention noise = Edit({P::kResidPost, 0}, InterventionOp::kNoise);
  noise.std = 0.05f, noise.seed = 3;
  Intervention flip = Edit({P::kV, 0}, InterventionOp::kScale);
  flip.factor = -2.0f;
  // A whole residual row set (zeroing it would leave an RMS norm at its singular point).
  Intervention cut = Edit({P::kResidPre, 1}, InterventionOp::kSet, {0});
  cut.value = Random(D, 1.0f);
  Intervention head = Edit({P::kUnembedIn, -1}, InterventionOp::kScale);
  head.factor = 1.5f;
  Intervention logits = Edit({P::kUnembedOut, -1}, InterventionOp::kScale, {1, 3});
  logits.factor = 0.25f;
  edits_ = {zero, set, scale, add, noise, flip, cut, head, logits};
  ExpectFiniteDifferences(Objective{});
}

TEST_P(GradientRuleTest, ProjectAndSaeClampDifferentiate) {
  using P = HookPoint;
  const int64_t D = c().d_model;
  Intervention project = Edit({P::kResidPost, 0}, InterventionOp::kProject);
  project.value = Random(D, 1.0f);
  project.target = 0.3f;
  // A ReLU feature that fires on some positions and not others, clamped to 2.
  Intervention clamp = Edit({P::kResidPre, 1}, InterventionOp::kSaeClamp);
  clamp.value = Random(D, 1.0f);
  clamp.decoder = Random(D, 0.3f);
  clamp.decoder_bias = Random(D, 0.1f);
  clamp.target = 2.0f;
  Intervention twice = Edit({P::kMlpOut, 0}, InterventionOp::kSaeClamp, {0, 2});
  twice.value = Random(D, 1.0f);
  twice.decoder = Random(D, 0.3f);
  twice.target = -1.0f;
  Intervention then = Edit({P::kMlpOut, 0}, InterventionOp::kScale, {2});
  then.factor = 3.0f;
  edits_ = {project, clamp, twice, then};
  ExpectFiniteDifferences(Objective{});
}

TEST_P(GradientRuleTest, APatchSendsNoGradientToItsSource) {
  const std::vector<int32_t> source = {3, 14, 15, 92, 65, 35};
  auto alone = RunWithGradients(*model_, {source}, HookSelection::All(c()), Objective{});
  ASSERT_TRUE(alone.ok()) << alone.status();
  prompts_.push_back(source);
  Intervention patch = Edit({HookPoint::kAttnOut, 0}, InterventionOp::kPatch, {1, 2});
  patch.prompts = {0};
  patch.source = 1;
  edits_ = {patch};
  ExpectFiniteDifferences(Objective{});
  // The source's gradients are its own objective's alone: the same bits as without the patch.
  auto run = RunWithGradients(*model_, prompts_, HookSelection::All(c()), Objective{}, Set().get());
  ASSERT_TRUE(run.ok()) << run.status();
  for (const auto& [name, buffer] : (*alone)[0].cache) {
    EXPECT_TRUE(testing::AllClose(name, (*run)[1].cache.at(name).view(), buffer.view(), 0));
  }
}

// A mixture's input and output hooks (mlp.hook_pre / mlp.hook_post of an MoE layer) pass
// their rules like any token hook; routing stays capture only.
class MoeGradientRuleTest : public GradientRuleTest {};

TEST_P(MoeGradientRuleTest, MixtureInputAndOutputPassTheirRules) {
  using P = HookPoint;
  Intervention scale = Edit({P::kMoeIn, 0}, InterventionOp::kScale, {1, 4});
  scale.factor = 0.7f;
  Intervention set = Edit({P::kMoeOut, 1}, InterventionOp::kSet, {2});
  set.value = Random(c().d_model, 0.5f);
  Intervention add = Edit({P::kMoeOut, 0}, InterventionOp::kAdd);
  add.value = Random(c().d_model, 0.3f);
  edits_ = {scale, set, add};
  ExpectFiniteDifferences(Objective{});
  Intervention routing = Edit({P::kExpertWeights, 0}, InterventionOp::kZero);
  std::vector<int> lengths = {Length(0)};
  EXPECT_FALSE(InterventionSet::Create(c(), {routing}, lengths, false, 0).ok());
}

INSTANTIATE_TEST_SUITE_P(Families, MoeGradientRuleTest, ::testing::Values("mixtral", "qwen3_moe"));

TEST_P(GradientRuleTest, RefusedWhereNoRuleIsDefined) {
  const Intervention norm = Edit({HookPoint::kLn1Scale, 0}, InterventionOp::kScale);
  Intervention map = Edit({HookPoint::kPattern, 0}, InterventionOp::kZero);
  map.keys.kind = PositionSelector::Kind::kIndices;
  map.keys.indices = {0};
  Intervention clamp = Edit({HookPoint::kUnembedOut, -1}, InterventionOp::kSaeClamp);
  clamp.value = Random(c().vocab_size, 1.0f);
  clamp.decoder = Random(c().vocab_size, 1.0f);
  for (const Intervention& iv : {norm, map, clamp}) {
    edits_ = {iv};
    auto r =
        RunWithGradients(*model_, prompts_, HookSelection::None(c()), Objective{}, Set().get());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << HookName(iv.hook);
    EXPECT_NE(r.status().message().find(HookName(iv.hook)), std::string::npos) << r.status();
  }
}

// Learned positions and a plain MLP; rotary, grouped-query heads and a gated MLP; post-norms
// and softcaps; a parallel residual.
INSTANTIATE_TEST_SUITE_P(Families, GradientRuleTest,
                         ::testing::Values("gpt2", "llama", "gemma2", "gpt_neox"));

TEST(Gradients, RefusedWhereTheyCannotBeComputedYet) {
  LoadOptions split;
  split.devices = "cpu:0,cpu:1";
  auto two = Model::Load(split);
  ASSERT_TRUE(two.ok());
  auto r = RunWithGradients(**two, {{1, 2, 3}}, HookSelection::None((*two)->config()), Objective{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  auto one = Model::Load(LoadOptions());
  ASSERT_TRUE(one.ok());
  r = RunWithGradients(**one, {{1}}, HookSelection::None((*one)->config()), Objective{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
}

// Memory is checked before anything runs: a budget below GradientStepBytes is
// RESOURCE_EXHAUSTED naming both figures (attention-map gradients count); one above it runs.
TEST(Gradients, MemoryBeyondTheBudgetIsRefusedBeforeRunning) {
  LoadOptions tight;
  tight.gradient_mib = 1;
  auto model = Model::Load(tight);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  std::vector<int32_t> prompt(200, 7);
  const int64_t need = GradientStepBytes(c, 200, 0);
  ASSERT_GT(need, int64_t{1} << 20);
  auto r = RunWithGradients(**model, {prompt}, HookSelection::None(c), Objective{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_NE(r.status().message().find(absl::StrCat("need about ", need >> 20, " MiB")),
            std::string::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("allows 1 MiB (--gradient-mib)"), std::string::npos);
  EXPECT_GT(GradientStepBytes(c, 200, 200), need);  // the maps' gradients cost more
  auto maps = RunWithGradients(
      **model, {prompt}, *HookSelection::Parse(c, {"blocks.0.attn.hook_pattern"}), Objective{});
  EXPECT_NE(maps.status().message().find("with attention-map gradients"), std::string::npos)
      << maps.status();
  LoadOptions ample;
  ample.gradient_mib = static_cast<int>((need >> 20) + 1);
  auto roomy = Model::Load(ample);
  ASSERT_TRUE(roomy.ok());
  EXPECT_TRUE(RunWithGradients(**roomy, {prompt}, HookSelection::None(c), Objective{}).ok());
}

}  // namespace
}  // namespace lensd
