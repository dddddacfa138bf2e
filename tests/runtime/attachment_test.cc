// The hook chain with attachments (engine/runtime/attachments.h): an attachment runs after the
// interventions at its site and before capture, its output is what capture sees and what
// flows downstream, its own hooks are captured under the site's name, and sequences that did
// not attach it are untouched — alone, batched, and under tensor parallelism. The attachment
// here adds a vector, so every expectation is a run with the `add` intervention instead.
#include <random>

#include "engine/backend/backend.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/step_context.h"
#include "engine/runtime/step_hooks.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::AllClose;

// Adds `v` to its sequences' rows at `site`; captures its input and output as the attached
// hooks kSaeInput and kSaeOutput.
class AddAttachment : public HookAttachment {
 public:
  AddAttachment(HookId site, std::vector<float> v) : site_(site), v_(std::move(v)) {}
  HookId site() const override { return site_; }
  int64_t Width(AttachedHook) const override { return static_cast<int64_t>(v_.size()); }
  void Run(RankContext& c, TensorView rows, const std::vector<int>& seqs) const override {
    const int64_t w = rows.shape[1];
    TensorView input = c.Scratch(rows.shape);
    c.b.Copy(rows, input);
    EmitAttached(c, AttachedAt(site_, AttachedHook::kSaeInput), input, seqs);
    std::vector<int32_t> row_ids;
    for (int s : seqs) {
      const int n = static_cast<int>((*c.plan.batch)[s].tokens.size());
      for (int i = 0; i < n; ++i) row_ids.push_back(c.plan.q_begin[s] + i);
    }
    const int64_t n = static_cast<int64_t>(row_ids.size());
    std::vector<float> src(static_cast<size_t>(n * w));
    for (int64_t r = 0; r < n; ++r) std::copy(v_.begin(), v_.end(), src.begin() + r * w);
    TensorView device_src = c.Scratch({n, w});
    c.b.Upload(src.data(), device_src);
    const std::vector<float> ones(static_cast<size_t>(n), 1.0f);
    c.b.AddRowsScaled(device_src, row_ids.data(), ones.data(), rows);
    EmitAttached(c, AttachedAt(site_, AttachedHook::kSaeOutput), rows, seqs);
  }

 private:
  HookId site_;
  std::vector<float> v_;
};

struct Case {
  std::string site;
  int tp;
};

class AttachmentTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    LoadOptions o;
    o.model_dir = testing::FamilyDir("llama");
    if (GetParam().tp > 1) o.devices = "cpu:0,cpu:1", o.tensor_parallel = GetParam().tp;
    auto m = Model::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    auto site = HookFromName(c(), GetParam().site);
    ASSERT_TRUE(site.ok()) << site.status();
    site_ = *site;
    const Shape shape = HookShape(c(), site_.point, 1);
    std::mt19937 rng(7);
    std::normal_distribution<float> d(0, 1);
    v_.resize(static_cast<size_t>(shape.NumElements()));
    for (float& x : v_) x = d(rng);
    attached_ = {std::make_shared<AddAttachment>(site_, v_)};
  }
  const ModelConfig& c() const { return model_->config(); }

  Intervention At(InterventionOp op) const {
    Intervention iv;
    iv.hook = site_;
    iv.op = op;
    return iv;
  }
  // Zero at position 2 of prompt 0: an intervention the attachment must see.
  Intervention ZeroAt2() const {
    Intervention iv = At(InterventionOp::kZero);
    iv.prompts = {0};
    iv.positions.kind = PositionSelector::Kind::kIndices;
    iv.positions.indices = {2};
    return iv;
  }
  Intervention AddV(std::vector<int> prompts) const {
    Intervention iv = At(InterventionOp::kAdd);
    iv.prompts = std::move(prompts);
    Shape s = HookShape(c(), site_.point, 1);
    iv.value.shape = s.ToVector();
    iv.value.data = v_;
    return iv;
  }
  std::vector<CacheResult> Run(const std::vector<std::vector<int32_t>>& prompts,
                               std::vector<Intervention> list,
                               const std::vector<const AttachmentList*>& attachments = {}) {
    std::vector<int> lengths;
    for (const auto& p : prompts) lengths.push_back(static_cast<int>(p.size()));
    std::shared_ptr<const InterventionSet> set;
    if (!list.empty()) {
      auto made = InterventionSet::Create(c(), std::move(list), lengths, false, 0);
      EXPECT_TRUE(made.ok()) << made.status();
      if (made.ok()) set = *made;
    }
    const std::vector<HookId> sites =
        attachments.empty() ? std::vector<HookId>{} : std::vector<HookId>{site_};
    auto r = RunWithCache(*model_, prompts, HookSelection::All(c(), sites), set.get(), attachments);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : std::vector<CacheResult>(prompts.size());
  }

  std::unique_ptr<Model> model_;
  HookId site_{HookPoint::kEmbed, -1};
  std::vector<float> v_;
  AttachmentList attached_;
};

::testing::AssertionResult SameModelHooks(const CacheResult& want, const CacheResult& got) {
  auto r = AllClose("logits", got.logits.view(), want.logits.view(), 0);
  for (const auto& [name, buf] : want.cache) {
    if (!r) return r;
    auto it = got.cache.find(name);
    if (it == got.cache.end()) return ::testing::AssertionFailure() << "missing " << name;
    r = AllClose(name, it->second.view(), buf.view(), 0);
  }
  return r;
}

TEST_P(AttachmentTest, RunsBetweenInterventionsAndCaptureForItsSequencesOnly) {
  const std::vector<int32_t> a = {1, 17, 33, 5, 240, 9, 71}, b = {3, 44, 8, 912, 6};
  const std::vector<CacheResult> got = Run({a, b}, {ZeroAt2()}, {&attached_, nullptr});
  // Prompt 0 attached it after the zero: as if `add v` followed the zero; the site's capture
  // is the attachment's output.
  const std::vector<CacheResult> edited = Run({a, b}, {ZeroAt2(), AddV({0})});
  EXPECT_TRUE(SameModelHooks(edited[0], got[0]));
  const std::vector<CacheResult> zeroed = Run({a}, {ZeroAt2()});
  const std::string site = HookName(site_);
  // Attached hooks are [1, P, width]: per-head sites flattened, as SAELens's hook_z SAEs.
  auto flat = [](const Buffer& b) {
    return b.view().Reshaped({1, b.view().shape[1], b.view().NumElements() / b.view().shape[1]});
  };
  EXPECT_TRUE(AllClose("hook_sae_input", got[0].cache.at(site + ".hook_sae_input").view(),
                       flat(zeroed[0].cache.at(site)), 0));
  EXPECT_TRUE(AllClose("hook_sae_output", got[0].cache.at(site + ".hook_sae_output").view(),
                       flat(edited[0].cache.at(site)), 0));
  // Prompt 1 did not attach it: bit-identical to running alone, and without attached hooks.
  const std::vector<CacheResult> alone = Run({b}, {});
  EXPECT_TRUE(SameModelHooks(alone[0], got[1]));
  EXPECT_EQ(got[1].cache.count(site + ".hook_sae_input"), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Sites, AttachmentTest,
    ::testing::Values(Case{"blocks.1.hook_resid_mid", 1}, Case{"blocks.0.attn.hook_z", 1},
                      Case{"blocks.1.mlp.hook_post", 1}, Case{"blocks.1.hook_resid_mid", 2},
                      Case{"blocks.0.attn.hook_z", 2}, Case{"blocks.1.mlp.hook_post", 2}),
    [](const auto& info) {
      std::string name = info.param.site + "_tp" + std::to_string(info.param.tp);
      for (char& ch : name) {
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return name;
    });

TEST(AttachmentSites, RefusesWhatCannotCarryOne) {
  const ModelConfig c = BuiltinConfig();
  EXPECT_TRUE(CheckAttachmentSite(c, {HookPoint::kResidPost, 0}).ok());
  EXPECT_TRUE(CheckAttachmentSite(c, {HookPoint::kZ, 1}).ok());
  for (HookId bad :
       {HookId{HookPoint::kPattern, 0}, HookId{HookPoint::kLn1Normalized, 0},
        HookId{HookPoint::kLn1Scale, 0}, HookId{HookPoint::kUnembedOut, -1},
        HookId{HookPoint::kResidPost, c.n_layers}, HookId{HookPoint::kResidPost, 0, 2}}) {
    const absl::Status s = CheckAttachmentSite(c, bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << HookName(bad);
  }
  auto add = [](HookId site) {
    return std::make_shared<AddAttachment>(site, std::vector<float>{});
  };
  const AttachmentList twice = {add({HookPoint::kResidPost, 0}), add({HookPoint::kResidPost, 0})};
  EXPECT_EQ(AttachmentSites(c, twice).status().code(), absl::StatusCode::kInvalidArgument);
  auto sites = AttachmentSites(c, {add({HookPoint::kResidPost, 0}), add({HookPoint::kZ, 1})});
  ASSERT_TRUE(sites.ok());
  EXPECT_EQ(sites->size(), 2u);
}

TEST(AttachmentSites, AttachedHooksAreNamedAndSelectableUnderTheirSite) {
  const ModelConfig c = BuiltinConfig();
  const HookId site{HookPoint::kResidPost, 1};
  EXPECT_EQ(HookName(AttachedAt(site, AttachedHook::kSaeActsPost)),
            "blocks.1.hook_resid_post.hook_sae_acts_post");
  EXPECT_FALSE(HookSelection::Parse(c, {"blocks.1.hook_resid_post.hook_sae_error"}).ok());
  auto s = HookSelection::Parse(c, {"blocks.*.hook_resid_post.*"}, {site});
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->hooks().size(), static_cast<size_t>(kNumAttachedHooks));
  EXPECT_TRUE(s->Contains(AttachedAt(site, AttachedHook::kSaeInput)));
  EXPECT_FALSE(s->Contains(site));
  EXPECT_FALSE(s->Contains(AttachedAt({HookPoint::kResidPost, 0}, AttachedHook::kSaeInput)));
  // The attached hooks follow their site in forward order.
  const std::vector<HookId> all = AllHooks(c, {site});
  auto at = std::find(all.begin(), all.end(), site);
  ASSERT_NE(at, all.end());
  EXPECT_EQ(*(at + 1), AttachedAt(site, AttachedHook::kSaeInput));
  EXPECT_EQ(*(at + kNumAttachedHooks), AttachedAt(site, AttachedHook::kSaeOutput));
}

}  // namespace
}  // namespace lensd
