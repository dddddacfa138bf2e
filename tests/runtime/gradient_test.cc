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
#include "engine/runtime/objective.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

class GradientTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    LoadOptions o;
    o.model_dir = testing::FamilyDir(GetParam());
    auto m = Model::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    prompt_ = testing::ReferencePrompt(GetParam(), 0);
  }
  const ModelConfig& c() const { return model_->config(); }

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

  // The objective with `delta` added at flat coordinate `at` of hook `id`'s TransformerLens
  // value ([1, P, ...], or [1, H, P, P] for the attention maps).
  double ObjectiveWith(const Objective& o, HookId id, int64_t at, float delta) {
    const int64_t P = static_cast<int64_t>(prompt_.size());
    const Shape shape = HookShape(c(), id.point, P);
    const int axis = PositionAxis(id.point);
    std::vector<int64_t> dims = shape.ToVector();
    const int64_t inner = shape.NumElements() / (dims[0] * dims[axis]) / (axis == 2 ? dims[1] : 1);
    const int64_t position = at / inner % P;  // the query row of a map
    dims[axis] = 1;
    Intervention iv;
    iv.hook = id;
    iv.op = InterventionOp::kAdd;
    iv.positions.kind = PositionSelector::Kind::kIndices;
    iv.positions.indices = {static_cast<int>(position)};
    iv.value.shape = dims;
    iv.value.data.assign(static_cast<size_t>(Shape::FromVector(dims).NumElements()), 0.0f);
    // Maps: [head][key] of the one query row; else the row's elements.
    iv.value.data[axis == 2 ? at / (P * P) * P + at % P : at % inner] = delta;
    auto set = InterventionSet::Create(c(), {iv}, {static_cast<int>(P)}, false, 0);
    EXPECT_TRUE(set.ok()) << set.status();
    auto r = RunWithCache(*model_, {prompt_}, HookSelection::None(c()), set->get());
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<float> grad(prompt_.size() * c().vocab_size);
    auto v =
        ObjectiveAndGradient(o, (*r)[0].logits.As<float>(), prompt_, c().vocab_size, grad.data());
    EXPECT_TRUE(v.ok()) << v.status();
    return *v;
  }

  // A coordinate of hook `id` whose value flows downstream: for the maps, `at` if its key is
  // visible to its query (the layer's captured scores are finite there: causal and window
  // masks), else the query's own key (masked entries have gradient 0 by definition).
  int64_t Visible(const CacheResult& r, HookId id, int64_t at) const {
    if (!IsAttentionMap(id.point)) return at;
    const int64_t P = static_cast<int64_t>(prompt_.size());
    if (!Masked(r, id, at)) return at;
    return at - at % P + at / P % P;
  }
  static bool Masked(const CacheResult& r, HookId id, int64_t at) {
    const Buffer& scores = r.cache.at(HookName({HookPoint::kAttnScores, id.layer}));
    return std::isinf(scores.As<float>()[at]);
  }

  void ExpectFiniteDifferences(const Objective& o) {
    auto run = RunWithGradients(*model_, {prompt_}, HookSelection::All(c()), o);
    ASSERT_TRUE(run.ok()) << run.status();
    const CacheResult& r = (*run)[0];
    ASSERT_TRUE(r.objective.has_value());
    std::vector<float> unused(prompt_.size() * c().vocab_size);
    EXPECT_NEAR(
        *r.objective,
        *ObjectiveAndGradient(o, r.logits.As<float>(), prompt_, c().vocab_size, unused.data()),
        1e-9);
    std::mt19937 rng(5);
    for (HookId id : Checked()) {
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
      for (int64_t at : {top, Visible(r, id, static_cast<int64_t>(rng() % n)),
                         Visible(r, id, static_cast<int64_t>(rng() % n))}) {
        const float h = 1e-2f * std::max(1.0f, std::fabs(r.cache.at(HookName(id)).As<float>()[at]));
        const double numeric =
            (ObjectiveWith(o, id, at, h) - ObjectiveWith(o, id, at, -h)) / (2.0 * h);
        EXPECT_NEAR(numeric, grad[at], 2e-2 * scale + 1e-4)
            << name << " at " << at << " (largest |grad| " << scale << ")";
      }
    }
  }

  std::unique_ptr<Model> model_;
  std::vector<int32_t> prompt_;
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

TEST_P(GradientTest, APromptsGradientsAreTheSameBitsAloneAndBatched) {
  const std::vector<int32_t> other = {3, 14, 15, 92, 65};
  const Objective loss;
  auto alone = RunWithGradients(*model_, {prompt_}, HookSelection::All(c()), loss);
  auto batched = RunWithGradients(*model_, {other, prompt_}, HookSelection::All(c()), loss);
  ASSERT_TRUE(alone.ok() && batched.ok());
  for (const auto& [name, buffer] : (*alone)[0].cache) {
    EXPECT_TRUE(testing::AllClose(name, (*batched)[1].cache.at(name).view(), buffer.view(), 0));
  }
  EXPECT_EQ(*(*alone)[0].objective, *(*batched)[1].objective);
}

INSTANTIATE_TEST_SUITE_P(Families, GradientTest,
                         ::testing::Values("gpt2", "gpt_neox", "llama", "qwen2", "gemma2",
                                           "gemma3_text", "qwen3", "olmo2", "phi3"));

TEST(Gradients, RefusedWhereTheyCannotBeComputedYet) {
  LoadOptions o;
  o.model_dir = testing::FamilyDir("mixtral");
  auto moe = Model::Load(o);
  ASSERT_TRUE(moe.ok());
  auto r = RunWithGradients(**moe, {{1, 2, 3}}, HookSelection::None((*moe)->config()), Objective{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  LoadOptions split;
  split.devices = "cpu:0,cpu:1";
  auto two = Model::Load(split);
  ASSERT_TRUE(two.ok());
  r = RunWithGradients(**two, {{1, 2, 3}}, HookSelection::None((*two)->config()), Objective{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  auto one = Model::Load(LoadOptions());
  ASSERT_TRUE(one.ok());
  r = RunWithGradients(**one, {{1}}, HookSelection::None((*one)->config()), Objective{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
}

}  // namespace
}  // namespace lensd
