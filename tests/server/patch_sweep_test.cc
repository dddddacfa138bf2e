// PatchSweep at the edge: the grid's cell order, every validation error, and the metrics
// against their definitions (invariants and a direct softmax).
#include "server/patch_sweep.h"

#include <cmath>

#include "tests/test_util.h"

namespace lensd {
namespace {

class SweepSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = *Model::Load(LoadOptions{});
    facts_ = {&model_->config(), model_->tokenizer(), DType::kF32, /*kv_tokens=*/128, 0, {}};
    limits_.max_capture_bytes = 1 << 20;
  }
  v1::PatchSweepRequest Request(std::vector<int> clean, std::vector<int> corrupted) {
    v1::PatchSweepRequest r;
    r.mutable_clean()->mutable_tokens()->mutable_ids()->Add(clean.begin(), clean.end());
    r.mutable_corrupted()->mutable_tokens()->mutable_ids()->Add(corrupted.begin(), corrupted.end());
    r.mutable_metric()->mutable_kl();
    return r;
  }
  void ExpectError(const v1::PatchSweepRequest& r, absl::StatusCode code, const std::string& needle,
                   int max_cells = 4096) {
    EXPECT_TRUE(
        testing::FailsWith(ToSweepSpec(r, facts_, limits_, max_cells).status(), code, needle));
  }
  std::unique_ptr<Model> model_;
  ModelFacts facts_;
  ServerLimits limits_;
};

TEST_F(SweepSpecTest, CellsAreRowMajorOverLayerPositionHead) {
  const ModelConfig& c = model_->config();
  v1::PatchSweepRequest r = Request({1, 2, 3}, {1, 4, 3});
  r.set_component(v1::COMPONENT_Z);
  SweepSpec s = *ToSweepSpec(r, facts_, limits_, 4096);
  ASSERT_EQ(s.Cells(), c.n_layers * 3 * c.n_heads);
  int i = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int p = 0; p < 3; ++p) {
      for (int h = 0; h < c.n_heads; ++h, ++i) {
        int layer, position, head;
        s.Cell(i, &layer, &position, &head);
        EXPECT_EQ(std::tie(layer, position, head), std::tie(l, p, h)) << i;
      }
    }
  }
  // All positions and heads at once: one cell per layer, position and head -1.
  r.set_all_positions(true), r.set_all_heads(true);
  r.mutable_layers()->set_start(1);
  s = *ToSweepSpec(r, facts_, limits_, 4096);
  ASSERT_EQ(s.Cells(), c.n_layers - 1);
  int layer, position, head;
  s.Cell(0, &layer, &position, &head);
  EXPECT_EQ(std::tie(layer, position, head), std::make_tuple(1, -1, -1));
  // Denoising patches the clean run into the corrupted one; noising the reverse.
  EXPECT_EQ(s.source(), (std::vector<int32_t>{1, 2, 3}));
  r.set_noising(true);
  s = *ToSweepSpec(r, facts_, limits_, 4096);
  EXPECT_EQ(s.source(), (std::vector<int32_t>{1, 4, 3}));
  EXPECT_EQ(s.target(), (std::vector<int32_t>{1, 2, 3}));
}

TEST_F(SweepSpecTest, AttributionTakesAGradientOfAScalarMetric) {
  using C = absl::StatusCode;
  v1::PatchSweepRequest r = Request({1, 2, 3}, {1, 4, 3});
  r.set_method(v1::SWEEP_METHOD_ATTRIBUTION);
  ExpectError(r, C::kInvalidArgument, "kl's gradient at the unpatched target run is zero");
  r.mutable_metric()->mutable_logits();
  ExpectError(r, C::kInvalidArgument, "takes the logit_diff or logprob metric");
  r.mutable_metric()->mutable_logprob()->add_ids(5);
  r.set_component(v1::COMPONENT_PATTERN);
  auto s = ToSweepSpec(r, facts_, limits_, 4096);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->attribution);
  EXPECT_EQ(s->AsObjective().kind, Objective::Kind::kLogProb);
  EXPECT_EQ(s->AsObjective().positions, (std::vector<int>{2}));
  facts_.gradients = absl::FailedPreconditionError("gradients run on one device for now");
  ExpectError(r, C::kFailedPrecondition, "method ATTRIBUTION: gradients run on one device");
  r.set_method(static_cast<v1::SweepMethod>(7));
  ExpectError(r, C::kInvalidArgument, "method = 7 is not EXACT or ATTRIBUTION");
}

TEST_F(SweepSpecTest, Errors) {
  using C = absl::StatusCode;
  ExpectError(Request({1, 2}, {1, 2, 3}), C::kInvalidArgument, "clean has 2 tokens and corrupted 3");
  ExpectError(Request({}, {}), C::kInvalidArgument, "clean has no tokens");
  ExpectError(Request({1, 300}, {1, 2}), C::kInvalidArgument, "clean.tokens.ids[1] = 300");
  v1::PatchSweepRequest r = Request({1, 2}, {1, 3});
  r.clear_metric();
  ExpectError(r, C::kInvalidArgument, "metric is empty");
  r = Request({1, 2}, {1, 3});
  r.mutable_metric()->mutable_logit_diff()->add_answer_ids(4);
  ExpectError(r, C::kInvalidArgument, "metric.logit_diff.wrong_ids is empty");
  r.mutable_metric()->mutable_logit_diff()->add_wrong_ids(4);  // the answer again
  ExpectError(r, C::kInvalidArgument, "answer_ids and wrong_ids name the same tokens");
  r.mutable_metric()->mutable_logprob()->add_ids(-2);
  ExpectError(r, C::kInvalidArgument, "metric.logprob.ids[0] = -2");
  r = Request({1, 2}, {1, 3});
  r.mutable_metric()->add_positions(-1), r.mutable_metric()->add_positions(1);
  ExpectError(r, C::kInvalidArgument, "metric.positions[1] = 1 is out of range or repeated");
  r = Request({1, 2}, {1, 3});
  r.set_component(static_cast<v1::SweepComponent>(77));
  ExpectError(r, C::kInvalidArgument, "component must be one of");
  r = Request({1, 2}, {1, 3});
  r.mutable_layers()->set_start(-1), r.mutable_layers()->set_stop(-1);
  ExpectError(r, C::kInvalidArgument, "layers selects none");
  ExpectError(Request({1, 2}, {1, 3}), C::kResourceExhausted, "this server allows 3 (--max-sweep-cells)", 3);
  r = Request({1, 2}, {1, 3});
  r.mutable_metric()->mutable_logits();
  limits_.max_capture_bytes = 1000;
  ExpectError(r, C::kResourceExhausted, "the sweep's logits are");
  ExpectError(Request(std::vector<int>(43, 1), std::vector<int>(43, 2)), C::kResourceExhausted,
              "a sweep's two runs and a cell");
}

// Softmax in double, directly from its definition.
std::vector<double> Softmax(const std::vector<float>& l) {
  double z = 0;
  for (float x : l) z += std::exp(static_cast<double>(x));
  std::vector<double> p;
  for (float x : l) p.push_back(std::exp(static_cast<double>(x)) / z);
  return p;
}

TEST(SweepMetric, MatchesDefinitions) {
  SweepSpec s;
  s.vocab = 5;
  s.metric_positions = {1};
  const std::vector<float> rows = {9, 9, 9, 9, 9, 0.5f, -1.0f, 2.0f, 0.25f, 3.0f};  // [2, 5]
  const std::vector<double> p = Softmax({rows.begin() + 5, rows.end()});
  s.metric = SweepSpec::Metric::kLogitDiff;
  s.answer = {2, 4}, s.wrong = {1};
  EXPECT_DOUBLE_EQ(SweepMetricValue(s, rows.data(), 0, nullptr), 2.5 - -1.0);
  // Rows may start after position 0: `first` says where.
  EXPECT_DOUBLE_EQ(SweepMetricValue(s, rows.data() + 5, 1, nullptr), 3.5);
  s.metric = SweepSpec::Metric::kLogProb;
  EXPECT_NEAR(SweepMetricValue(s, rows.data(), 0, nullptr), std::log(p[2] + p[4]), 1e-12);
  s.answer = {0, 1, 2, 3, 4};
  EXPECT_NEAR(SweepMetricValue(s, rows.data(), 0, nullptr), 0.0, 1e-12);
  s.metric = SweepSpec::Metric::kKl;
  std::vector<float> ref = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  double want = 0;
  for (double q : p) want += 0.2 * std::log(0.2 / q);
  EXPECT_NEAR(SweepMetricValue(s, rows.data(), 0, ref.data()), want, 1e-12);
  // KL of a row to itself, or to itself shifted by a constant, is zero.
  for (int v = 5; v < 10; ++v) ref[v] = rows[v] + 7;
  EXPECT_NEAR(SweepMetricValue(s, rows.data(), 0, ref.data()), 0.0, 1e-12);
  // Several positions average.
  s.metric = SweepSpec::Metric::kLogitDiff;
  s.metric_positions = {0, 1};
  s.answer = {4}, s.wrong = {0};
  EXPECT_DOUBLE_EQ(SweepMetricValue(s, rows.data(), 0, nullptr), (0.0 + 2.5) / 2);
}

}  // namespace
}  // namespace lensd
