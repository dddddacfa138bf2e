// SAEs attached to the golden models against SAELens itself (tests/data/saes, made by
// tools/reference/make_sae_references.py): every hook_sae_* of both reference prompts with the
// error term kept, the logits unchanged bit for bit, the logits with the SAE spliced in; batch
// invariance; the load and lookup errors; and gradients through the SAE (SaeGradientTest).
#include "engine/runtime/sae.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "engine/model/npz.h"
#include "engine/model/safetensors.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/objective.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::AllClose;

struct Case {
  std::string name, family;
  friend void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
};

class SaeReferenceTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    model_ = testing::LoadFamily(GetParam().family);
    ASSERT_NE(model_, nullptr);
    auto sae = Sae::Load(*model_, "x=" + testing::SaeDir(GetParam().name));
    ASSERT_TRUE(sae.ok()) << sae.status();
    sae_ = *sae;
    auto ref = SafetensorsFile::Open(testing::SaeDir(GetParam().name) + "/reference.safetensors");
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = std::move(*ref);
    for (int p = 0; p < 2; ++p) {
      prompts_.push_back(testing::ToIds(*ref_->Find("p" + std::to_string(p) + ".input_ids")));
    }
  }
  const ModelConfig& c() const { return model_->config(); }
  Buffer Ref(const std::string& name) const {
    const TensorInfo* t = ref_->Find(name);
    EXPECT_NE(t, nullptr) << name;
    return testing::ToF32(*t);
  }
  // Both reference prompts with the SAE attached (error kept or spliced) and a third prompt
  // without it, in one batch; every attached hook selected.
  std::vector<CacheResult> Run(bool splice) {
    const AttachmentList attached = {sae_->Attach(splice)};
    auto selection = HookSelection::Parse(c(), {HookName(sae_->spec().site) + ".hook_sae_*"},
                                          {sae_->spec().site});
    EXPECT_TRUE(selection.ok()) << selection.status();
    auto r = RunWithCache(*model_, {prompts_[0], prompts_[1], other_}, *selection, nullptr,
                          {&attached, &attached, nullptr});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : std::vector<CacheResult>{};
  }

  std::unique_ptr<Model> model_;
  std::shared_ptr<const Sae> sae_;
  std::unique_ptr<SafetensorsFile> ref_;
  std::vector<std::vector<int32_t>> prompts_;
  const std::vector<int32_t> other_ = {1, 5, 9, 14, 3};
};

TEST_P(SaeReferenceTest, HookPointsEqualSaeLensAndTheModelIsUnchanged) {
  const std::vector<CacheResult> r = Run(/*splice=*/false);
  ASSERT_EQ(r.size(), 3u);
  const std::string site = HookName(sae_->spec().site);
  for (int p = 0; p < 2; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    for (const char* h : {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                          "hook_sae_recons", "hook_sae_error", "hook_sae_output"}) {
      const std::string name = site + "." + h;
      ASSERT_EQ(r[p].cache.count(name), 1u) << name;
      EXPECT_TRUE(AllClose(key + name, r[p].cache.at(name).view(), Ref(key + name).view(), 1e-4));
    }
    // The error term kept: the model's own logits, bit for bit.
    auto plain = RunWithCache(*model_, prompts_[p], HookSelection::None(c()));
    ASSERT_TRUE(plain.ok());
    EXPECT_TRUE(AllClose(key + "logits", r[p].logits.view(), plain->logits.view(), 0));
  }
  EXPECT_TRUE(r[2].cache.empty());
}

TEST_P(SaeReferenceTest, SplicedLogitsEqualSaeLensAndBatchesDoNotMatter) {
  const std::vector<CacheResult> r = Run(/*splice=*/true);
  ASSERT_EQ(r.size(), 3u);
  for (int p = 0; p < 2; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    EXPECT_TRUE(AllClose(key + "spliced logits", r[p].logits.view(),
                         Ref(key + "spliced_logits").view(), 1e-4));
  }
  // The prompt without the SAE is untouched; an attached prompt is the same bits alone.
  auto plain = RunWithCache(*model_, other_, HookSelection::None(c()));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(AllClose("unattached", r[2].logits.view(), plain->logits.view(), 0));
  const AttachmentList attached = {sae_->Attach(true)};
  auto alone = RunWithCache(*model_, {prompts_[1]}, HookSelection::None(c()), nullptr, {&attached});
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_TRUE(AllClose("alone", (*alone)[0].logits.view(), r[1].logits.view(), 0));
}

// The reference script's `steer`: feature 3 += 4, feature 5 = 0 everywhere; features 1 and 2
// doubled at position 1; the error term kept. Edits for `prompts` prompts.
AttachmentList Steered(const Sae& sae, int prompts) {
  const Selection everywhere{false, {}, 0, Selection::kOpen};
  FeatureEdit add{FeatureEdit::Op::kAdd, {3}, {4.0f}, {}};
  FeatureEdit zero{FeatureEdit::Op::kZero, {5}, {0.0f}, {}};
  FeatureEdit scale{FeatureEdit::Op::kScale, {1, 2}, {2.0f, 2.0f}, {}};
  add.positions.assign(prompts, everywhere);
  zero.positions.assign(prompts, everywhere);
  scale.positions.assign(prompts, Selection{true, {1}, 0, 0});
  return {sae.Attach(false, {add, zero, scale})};
}

TEST_P(SaeReferenceTest, SteeredGreedyTokensEqualSaeLens) {
  const AttachmentList attached = Steered(*sae_, 1);
  for (int p = 0; p < 2; ++p) {
    const std::vector<int32_t> want =
        testing::ToIds(*ref_->Find("p" + std::to_string(p) + ".steered_greedy"));
    SamplingParams greedy;
    greedy.max_new_tokens = static_cast<int>(want.size() - prompts_[p].size());
    greedy.ignore_eos = true;
    auto gen = Generate(*model_, prompts_[p], greedy, nullptr, nullptr, &attached);
    ASSERT_TRUE(gen.ok()) << gen.status();
    std::vector<int32_t> got = prompts_[p];
    got.insert(got.end(), gen->tokens.begin(), gen->tokens.end());
    EXPECT_EQ(got, want) << "prompt " << p;
  }
}

TEST_P(SaeReferenceTest, EditsOfGeneratedPositionsStartAtTheFirstNewToken) {
  const std::vector<int32_t>& prompt = prompts_[1];
  const int P = static_cast<int>(prompt.size());
  FeatureEdit add{FeatureEdit::Op::kAdd, {3}, {40.0f}, {Selection{false, {}, P, Selection::kOpen}}};
  const AttachmentList attached = {sae_->Attach(false, {add})};
  SamplingParams greedy;
  greedy.max_new_tokens = 8;
  greedy.ignore_eos = true;
  auto plain = Generate(*model_, prompt, greedy);
  auto steered = Generate(*model_, prompt, greedy, nullptr, nullptr, &attached);
  ASSERT_TRUE(plain.ok() && steered.ok());
  // The prompt's positions are untouched, so the first token is the plain one; the edit acts
  // from its position on.
  EXPECT_EQ(steered->tokens[0], plain->tokens[0]);
  EXPECT_NE(steered->tokens, plain->tokens);
}

TEST_P(SaeReferenceTest, FeatureEditsSteerAsSaeLensDoes) {
  const AttachmentList attached = Steered(*sae_, 3);
  auto r = RunWithCache(*model_, {prompts_[0], prompts_[1], other_}, HookSelection::None(c()),
                        nullptr, {&attached, &attached, nullptr});
  ASSERT_TRUE(r.ok()) << r.status();
  for (int p = 0; p < 2; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    EXPECT_TRUE(AllClose(key + "steered logits", (*r)[p].logits.view(),
                         Ref(key + "steered_logits").view(), 1e-4));
  }
  auto plain = RunWithCache(*model_, other_, HookSelection::None(c()));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(AllClose("unattached", (*r)[2].logits.view(), plain->logits.view(), 0));
}

INSTANTIATE_TEST_SUITE_P(SaeLens, SaeReferenceTest,
                         ::testing::Values(Case{"gpt2_standard", "gpt2"},
                                           Case{"llama_jumprelu", "llama"},
                                           Case{"gpt2_topk_z", "gpt2"},
                                           Case{"llama_topk", "llama"}),
                         [](const auto& info) { return info.param.name; });

// A copy of reference SAE `name` in a fresh directory, cfg.json replaced by `cfg` when given.
std::string CopySae(const std::string& name, const std::string& tag, const std::string& cfg = "") {
  const std::string dir = testing::TempDir(tag);
  for (const char* f : {"cfg.json", "sae_weights.safetensors"}) {
    std::ifstream in(testing::SaeDir(name) + "/" + f, std::ios::binary);
    std::ofstream(dir + "/" + f, std::ios::binary) << in.rdbuf();
  }
  if (!cfg.empty()) std::ofstream(dir + "/cfg.json") << cfg;
  return dir;
}

TEST(Sae, LoadErrorsNameTheFileAndField) {
  auto model = testing::LoadFamily("gpt2");
  ASSERT_NE(model, nullptr);
  Model& m = *model;
  using C = absl::StatusCode;
  const std::string good = testing::SaeDir("gpt2_standard");
  EXPECT_TRUE(testing::FailsWith(Sae::Load(m, good).status(), C::kInvalidArgument, "NAME=DIR"));
  EXPECT_TRUE(testing::FailsWith(Sae::Load(m, "a=" + good + "@blocks.0.mlp.hook_post").status(),
                                 C::kInvalidArgument,
                                 "d_in = 64 but blocks.0.mlp.hook_post has width 256"));
  EXPECT_TRUE(testing::FailsWith(Sae::Load(m, "a=" + good + "@blocks.7.hook_resid_post").status(),
                                 C::kInvalidArgument, "cfg.json"));
  EXPECT_TRUE(testing::FailsWith(Sae::Load(m, "a=/nonexistent").status(), C::kNotFound,
                                 "/nonexistent/cfg.json"));
  const std::string gated = CopySae(
      "gpt2_standard", "sae_gated",
      R"({"architecture": "gated", "d_in": 64, "d_sae": 96, "hook_name": "blocks.1.hook_resid_post"})");
  EXPECT_TRUE(testing::FailsWith(Sae::Load(m, "a=" + gated).status(), C::kInvalidArgument,
                                 "architecture 'gated' is not supported"));
  const std::string wide = CopySae(
      "gpt2_standard", "sae_wide",
      R"({"architecture": "standard", "d_in": 64, "d_sae": 97, "hook_name": "blocks.1.hook_resid_post"})");
  EXPECT_TRUE(testing::FailsWith(Sae::Load(m, "a=" + wide).status(), C::kInvalidArgument,
                                 "W_enc has shape [64, 96], expected [64, 97]"));
  // The older SAELens form (activation_fn_str) loads; two SAEs may not share a name.
  const std::string old = CopySae(
      "gpt2_standard", "sae_old",
      R"({"activation_fn_str": "relu", "d_in": 64, "d_sae": 96, "hook_name": "blocks.1.hook_resid_post"})");
  auto saes = LoadSaes(m, {"old=" + old, "new=" + good});
  ASSERT_TRUE(saes.ok()) << saes.status();
  EXPECT_EQ(saes->at("old")->spec().kind, SaeSpec::Kind::kStandard);
  EXPECT_TRUE(testing::FailsWith(LoadSaes(m, {"a=" + old, "a=" + good}).status(),
                                 C::kInvalidArgument, "'a' is used twice"));
  EXPECT_TRUE(testing::FailsWith(FindSae(*saes, "res1").status(), C::kInvalidArgument,
                                 "no SAE named 'res1'; loaded: new, old"));
}

// Gemma Scope's params.npz (tools/reference/make_gemmascope_npz.py: the reference is numpy's
// own reading of the archive and Gemma Scope's JumpReLU in float64).
TEST(Sae, GemmaScopeNpzEqualsNumpy) {
  auto model = testing::LoadFamily("gpt2");
  ASSERT_NE(model, nullptr);
  const std::string dir = testing::SaeDir("gemmascope_gpt2");
  EXPECT_TRUE(testing::FailsWith(Sae::Load(*model, "gs=" + dir).status(),
                                 absl::StatusCode::kInvalidArgument, "names no hook"));
  auto sae = Sae::Load(*model, "gs=" + dir + "@blocks.1.hook_resid_post");
  ASSERT_TRUE(sae.ok()) << sae.status();
  EXPECT_EQ((*sae)->spec().kind, SaeSpec::Kind::kJumpRelu);
  EXPECT_EQ((*sae)->spec().d_sae, 48);
  auto ref = SafetensorsFile::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok());
  const AttachmentList attached = {(*sae)->Attach(false)};
  const HookId site{HookPoint::kResidPost, 1};
  auto selection = HookSelection::Parse(model->config(), {"blocks.1.hook_resid_post.*"}, {site});
  ASSERT_TRUE(selection.ok());
  for (int p = 0; p < 2; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find(key + "input_ids"));
    auto r = RunWithCache(*model, {ids}, *selection, nullptr, {&attached});
    ASSERT_TRUE(r.ok()) << r.status();
    for (const char* h : {"hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons"}) {
      const std::string name = std::string("blocks.1.hook_resid_post.") + h;
      EXPECT_TRUE(AllClose(key + name, (*r)[0].cache.at(name).view(),
                           testing::ToF32(*(*ref)->Find(key + name)).view(), 1e-4));
    }
  }
}

TEST(Npy, HeadersAreCheckedAndNamed) {
  auto npy = [](const std::string& header, size_t data_bytes) {
    std::string h = header;
    h.resize(118, ' ');
    h += '\n';  // magic (6) + version (2) + length (2) + header: a multiple of 64
    std::string out = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(h.size()) + '\0';
    return out + h + std::string(data_bytes, '\0');
  };
  auto ok = ParseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24), "a");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ok->data.size(), 6u);
  using C = absl::StatusCode;
  EXPECT_TRUE(testing::FailsWith(
      ParseNpy(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24), "b").status(),
      C::kInvalidArgument, "b: a Fortran-order array"));
  EXPECT_TRUE(testing::FailsWith(
      ParseNpy(npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16), "c").status(),
      C::kInvalidArgument, "c: dtype '<i8'"));
  EXPECT_TRUE(testing::FailsWith(
      ParseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20), "d")
          .status(),
      C::kInvalidArgument, "d: holds 20 data bytes; its shape needs 24"));
  EXPECT_TRUE(
      testing::FailsWith(ParseNpy("PK", "e").status(), C::kInvalidArgument, "e: not a .npy array"));
  EXPECT_TRUE(
      testing::FailsWith(ReadNpz("/nonexistent.npz").status(), C::kNotFound, "/nonexistent.npz"));
}

TEST(Sae, NonFiniteWeightsAreRefused) {
  auto model = testing::LoadFamily("gpt2");
  ASSERT_NE(model, nullptr);
  const std::string dir = CopySae("gpt2_standard", "sae_nan");
  auto file = SafetensorsFile::Open(testing::SaeDir("gpt2_standard") + "/sae_weights.safetensors");
  ASSERT_TRUE(file.ok());
  SafetensorsWriter w;
  for (const auto& [name, info] : (*file)->tensors()) {
    Buffer b = testing::ToF32(info);
    if (name == "b_enc") b.As<float>()[3] = NAN;
    w.AddF32(name, b.view());
  }
  ASSERT_TRUE(w.WriteFile(dir + "/sae_weights.safetensors").ok());
  EXPECT_TRUE(testing::FailsWith(Sae::Load(*model, "a=" + dir).status(),
                                 absl::StatusCode::kInvalidArgument,
                                 "b_enc has non-finite values"));
}

// Gradients through the attached SAE (SAELens's: the error term a constant, so what reaches
// the SAE's input goes through its encoder and decoder): with the SAE spliced in, where the
// forward is the function the backward differentiates, every SAE hook's gradient and an
// upstream one against central finite differences, through a feature edit's rule; with the
// error term kept and nothing edited, the site's own gradient is the plain model's, bit for
// bit; the steered model's gradients against SAELens's autograd.
class SaeGradientTest : public SaeReferenceTest {
 protected:
  void SetUp() override {
    SaeReferenceTest::SetUp();
    ids_ = prompts_[0];
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
    const std::vector<int32_t> ids = testing::ToIds(*ref_->Find(key + "input_ids"));
    auto r = RunWithGradients(*model_, {ids}, *selection, Objective{}, nullptr, {&steered});
    ASSERT_TRUE(r.ok()) << r.status();
    int checked = 0;
    for (const auto& [name, info] : ref_->tensors()) {
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

INSTANTIATE_TEST_SUITE_P(SaeLensGradients, SaeGradientTest,
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
