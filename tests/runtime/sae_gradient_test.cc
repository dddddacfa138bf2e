// Gradients through an attached SAE (SAELens's: the error term a constant, so what reaches the
// SAE's input goes through its encoder and decoder): with the SAE spliced in, where the forward
// is the function the backward differentiates, every SAE hook's gradient and an upstream one
// against central finite differences, through a feature edit's rule; with the error term kept
// and nothing edited, the site's own gradient is the plain model's, bit for bit; SAEs that
// normalise their input are refused by name.
#include <cmath>

#include "engine/model/safetensors.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/objective.h"
#include "engine/runtime/sae.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

struct Case {
  std::string name, family;
  friend void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
};

class SaeGradientTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    model_ = testing::LoadFamily(GetParam().family);
    ASSERT_NE(model_, nullptr);
    auto sae = Sae::Load(*model_, "x=" + testing::SaeDir(GetParam().name));
    ASSERT_TRUE(sae.ok()) << sae.status();
    sae_ = *sae;
    ids_ = testing::ReferencePrompt(GetParam().family, 0);
    // The edit's feature: the most active one at position 2, so that its rule matters.
    const std::string acts = HookName(site()) + ".hook_sae_acts_post";
    const AttachmentList plain = {sae_->Attach(false)};
    auto r = RunWithCache(*model_, {ids_}, *HookSelection::Parse(c(), {acts}, {site()}), nullptr,
                          {&plain});
    ASSERT_TRUE(r.ok()) << r.status();
    const float* row = (*r)[0].cache.at(acts).As<float>() + 2 * sae_->spec().d_sae;
    edited_ = static_cast<int>(std::max_element(row, row + sae_->spec().d_sae) - row);
    ASSERT_GT(row[edited_], 0.0f);
  }
  const ModelConfig& c() const { return model_->config(); }
  HookId site() const { return sae_->spec().site; }
  // The most active feature at position 2 scaled by 3 (its rule multiplies), then `extra`.
  AttachmentList Attached(bool splice, std::vector<FeatureEdit> extra = {}) const {
    FeatureEdit scale{FeatureEdit::Op::kScale, {edited_}, {3.0f}, {Selection{true, {2}, 0, 0}}};
    extra.insert(extra.begin(), scale);
    return {sae_->Attach(splice, std::move(extra))};
  }
  // The loss with the SAE spliced, `extra` edits and `probe` (null: none) in place.
  double Loss(const std::vector<FeatureEdit>& extra, const InterventionSet* probe) const {
    const AttachmentList a = Attached(true, extra);
    auto r = RunWithCache(*model_, {ids_}, HookSelection::None(c()), probe, {&a});
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<float> unused(ids_.size() * c().vocab_size);
    return *ObjectiveAndGradient(Objective{}, (*r)[0].logits.As<float>(), ids_, c().vocab_size,
                                 unused.data());
  }
  // The loss with `h` added to element `i` of hook `id` at position `p` (before the SAE when
  // `id` is its site).
  double Probed(HookId id, int p, int64_t i, int64_t width, float h) const {
    Intervention add;
    add.hook = id;
    add.op = InterventionOp::kAdd;
    add.positions.kind = PositionSelector::Kind::kIndices;
    add.positions.indices = {p};
    add.value = {{width}, std::vector<float>(static_cast<size_t>(width), 0.0f)};
    add.value.data[static_cast<size_t>(i)] = h;
    auto set = InterventionSet::Create(c(), {add}, {static_cast<int>(ids_.size())}, false, 0);
    EXPECT_TRUE(set.ok()) << set.status();
    return Loss({}, set->get());
  }
  static void ExpectNear(double numeric, const Buffer& grad, int64_t at, const std::string& what) {
    double scale = 0;
    for (int64_t k = 0; k < grad.shape().NumElements(); ++k) {
      scale = std::max(scale, std::fabs(double{grad.As<float>()[k]}));
    }
    EXPECT_NEAR(numeric, grad.As<float>()[at], 2e-2 * scale + 1e-4) << what << " at " << at;
  }

  std::unique_ptr<Model> model_;
  std::shared_ptr<const Sae> sae_;
  std::vector<int32_t> ids_;
  int edited_ = 0;
};

TEST_P(SaeGradientTest, SplicedGradientsMatchFiniteDifferences) {
  const std::string h = HookName(site());
  const HookId upstream{HookPoint::kResidPre, 0};
  auto selection = HookSelection::Parse(c(), {h + ".hook_sae_*", HookName(upstream)}, {site()});
  ASSERT_TRUE(selection.ok()) << selection.status();
  const AttachmentList a = Attached(true);
  auto r = RunWithGradients(*model_, {ids_}, *selection, Objective{}, nullptr, {&a});
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& cache = (*r)[0].cache;
  for (const char* hook : {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                           "hook_sae_recons", "hook_sae_output"}) {
    EXPECT_EQ(cache.count(h + "." + hook + "_grad"), 1u) << hook;
  }
  const int64_t w = sae_->spec().d_in, f = sae_->spec().d_sae, D = c().d_model;
  const float step = 1e-2f;
  for (const int p : {1, 2, static_cast<int>(ids_.size()) - 1}) {
    for (const int64_t i : {int64_t{0}, w / 2 + 1}) {  // the SAE's input, through the encoder
      const double fd =
          (Probed(site(), p, i, w, step) - Probed(site(), p, i, w, -step)) / (2 * step);
      ExpectNear(fd, cache.at(h + ".hook_sae_input_grad"), p * w + i, "sae input");
    }
    const int64_t i = 3;  // upstream of the SAE
    const double fd =
        (Probed(upstream, p, i, D, step) - Probed(upstream, p, i, D, -step)) / (2 * step);
    ExpectNear(fd, cache.at(HookName(upstream) + "_grad"), p * D + i, "resid_pre 0");
    for (const int feature : {edited_, 5}) {  // at position 2 the first passes the scale's rule
      auto acts = [&](float by) {
        FeatureEdit add{FeatureEdit::Op::kAdd, {feature}, {by}, {Selection{true, {p}, 0, 0}}};
        return Loss({add}, nullptr);
      };
      const double numeric = (acts(step) - acts(-step)) / (2 * step);
      ExpectNear(numeric, cache.at(h + ".hook_sae_acts_post_grad"), p * f + feature, "acts_post");
    }
  }
}

// The error term kept and nothing edited: the model's value flows on unchanged, so the site's
// gradient (of the value it passes downstream) is the plain model's; above the site the
// gradient goes through the SAE, as SAELens's does.
TEST_P(SaeGradientTest, ErrorKeptLeavesTheSitesGradientAsThePlainModels) {
  const HookId upstream{HookPoint::kResidPre, 0};
  auto selection = HookSelection::Parse(c(), {HookName(site()), HookName(upstream)}, {site()});
  ASSERT_TRUE(selection.ok());
  const AttachmentList kept = {sae_->Attach(false)};
  auto with = RunWithGradients(*model_, {ids_}, *selection, Objective{}, nullptr, {&kept});
  auto plain = RunWithGradients(*model_, {ids_}, *selection, Objective{});
  ASSERT_TRUE(with.ok() && plain.ok()) << with.status() << plain.status();
  const std::string g = HookName(site()) + "_grad", up = HookName(upstream) + "_grad";
  EXPECT_TRUE(
      testing::AllClose(g, (*with)[0].cache.at(g).view(), (*plain)[0].cache.at(g).view(), 0));
  EXPECT_FALSE(
      testing::AllClose(up, (*with)[0].cache.at(up).view(), (*plain)[0].cache.at(up).view(), 1e-6));
}

// Against SAELens itself (tests/data/saes, `<p>.grad.*`: autograd of the Hugging Face model with
// the SAE in a module hook, the error term kept, the reference script's steering edit): every
// SAE hook's gradient and blocks.0.hook_resid_pre's.
TEST_P(SaeGradientTest, SteeredGradientsEqualSaeLensAutograd) {
  auto ref = SafetensorsFile::Open(testing::SaeDir(GetParam().name) + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  const Selection everywhere{false, {}, 0, Selection::kOpen};
  const FeatureEdit add{FeatureEdit::Op::kAdd, {3}, {4.0f}, {everywhere}};
  const FeatureEdit zero{FeatureEdit::Op::kZero, {5}, {0.0f}, {everywhere}};
  const FeatureEdit twice{
      FeatureEdit::Op::kScale, {1, 2}, {2.0f, 2.0f}, {Selection{true, {1}, 0, 0}}};
  const AttachmentList steered = {sae_->Attach(false, {add, zero, twice})};
  const std::string h = HookName(site());
  auto selection =
      HookSelection::Parse(c(), {h + ".hook_sae_*", "blocks.0.hook_resid_pre"}, {site()});
  ASSERT_TRUE(selection.ok());
  for (int p = 0; p < 2; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find(key + "input_ids"));
    auto r = RunWithGradients(*model_, {ids}, *selection, Objective{}, nullptr, {&steered});
    ASSERT_TRUE(r.ok()) << r.status();
    int checked = 0;
    for (const auto& [name, info] : (*ref)->tensors()) {
      if (name.rfind(key + "grad.", 0) != 0) continue;
      const std::string hook = name.substr(key.size() + 5);
      ASSERT_EQ((*r)[0].cache.count(hook + "_grad"), 1u) << hook;
      EXPECT_TRUE(testing::AllClose(name, (*r)[0].cache.at(hook + "_grad").view(),
                                    testing::ToF32(info).view(), 1e-4));
      ++checked;
    }
    EXPECT_EQ(checked, 6) << "the five SAE hooks SAELens differentiates and resid_pre";
  }
}

INSTANTIATE_TEST_SUITE_P(SaeLens, SaeGradientTest,
                         ::testing::Values(Case{"gpt2_standard", "gpt2"},
                                           Case{"llama_topk", "llama"}),
                         [](const auto& info) { return info.param.name; });

TEST(SaeGradients, NormalisingSaesAreRefusedByName) {
  auto model = testing::LoadFamily("llama");
  ASSERT_NE(model, nullptr);
  auto sae = Sae::Load(*model, "ln=" + testing::SaeDir("llama_jumprelu"));
  ASSERT_TRUE(sae.ok()) << sae.status();
  const AttachmentList a = {(*sae)->Attach(true)};
  auto r = RunWithGradients(*model, {{1, 2, 3}}, HookSelection::None(model->config()), Objective{},
                            nullptr, {&a});
  EXPECT_TRUE(testing::FailsWith(r.status(), absl::StatusCode::kInvalidArgument,
                                 "gradients through SAE 'ln' are not supported"));
}

}  // namespace
}  // namespace lensd
