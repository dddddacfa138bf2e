// Identities that pin the semantics of interventions (DESIGN.md) on every golden family, in
// float32: each would fail if an op hit the wrong rows, heads or hooks, ran out of order, or
// did not reach downstream computation and the KV cache.
#include <cmath>
#include <random>

#include "engine/model/weights.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/interventions.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::AllClose;

class IdentityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = testing::LoadFamily(GetParam());
    ASSERT_NE(model_, nullptr);
    clean_ = testing::ReferencePrompt(GetParam(), 1);  // 19 tokens
    corrupted_ = clean_;
    for (size_t i = 2; i < corrupted_.size(); i += 3) corrupted_[i] = (corrupted_[i] * 7 + 3) % 1000;
  }
  const ModelConfig& c() const { return model_->config(); }

  HookId Id(const std::string& name) const {
    auto id = HookFromName(c(), name);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : HookId{HookPoint::kEmbed, -1};
  }
  Intervention Make(const std::string& hook, InterventionOp op) const {
    Intervention iv;
    iv.hook = Id(hook);
    iv.op = op;
    return iv;
  }
  std::shared_ptr<const InterventionSet> Set(std::vector<Intervention> list,
                                             const std::vector<std::vector<int32_t>>& prompts) {
    std::vector<int> lengths;
    for (const auto& p : prompts) lengths.push_back(static_cast<int>(p.size()));
    auto set = InterventionSet::Create(c(), std::move(list), lengths, false, 0);
    EXPECT_TRUE(set.ok()) << set.status();
    return set.ok() ? *set : nullptr;
  }
  // Every hook and the logits of each prompt, run together with `list`.
  std::vector<CacheResult> Run(const std::vector<std::vector<int32_t>>& prompts,
                               std::vector<Intervention> list = {}) {
    auto set = list.empty() ? nullptr : Set(std::move(list), prompts);
    auto r = RunWithCache(*model_, prompts, HookSelection::All(c()), set.get());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : std::vector<CacheResult>(prompts.size());
  }
  std::vector<float> RandomVector(int64_t n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0, 1);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = d(rng);
    return v;
  }

  std::unique_ptr<Model> model_;
  std::vector<int32_t> clean_, corrupted_;
};

::testing::AssertionResult Same(const CacheResult& a, const CacheResult& b) {
  auto r = AllClose("logits", a.logits.view(), b.logits.view(), 0);
  if (!r) return r;
  for (const auto& [name, buf] : a.cache) {
    auto it = b.cache.find(name);
    if (it == b.cache.end()) return ::testing::AssertionFailure() << "missing " << name;
    r = AllClose(name, it->second.view(), buf.view(), 0);
    if (!r) return r;
  }
  return ::testing::AssertionSuccess();
}

TEST_P(IdentityTest, PatchFromAnIdenticalPromptChangesNothing) {
  std::vector<Intervention> list;
  for (HookId id : AllHooks(c())) {
    if (IsCaptureOnly(id.point)) continue;  // q/k norm internals: refused (see below)
    Intervention iv;
    iv.hook = id, iv.op = InterventionOp::kPatch, iv.source = 0, iv.prompts = {1};
    list.push_back(iv);
  }
  const auto plain = Run({clean_});
  const auto patched = Run({clean_, clean_}, list);
  EXPECT_TRUE(Same(plain[0], patched[1]));
  EXPECT_TRUE(Same(plain[0], patched[0]));
}

TEST_P(IdentityTest, PatchingResidPreEverywhereGivesTheSourceLogits) {
  const auto plain = Run({clean_, corrupted_});
  ASSERT_FALSE(AllClose("differ", plain[0].logits.view(), plain[1].logits.view(), 0));
  for (int layer = 0; layer < c().n_layers; ++layer) {
    Intervention iv = Make("blocks." + std::to_string(layer) + ".hook_resid_pre",
                           InterventionOp::kPatch);
    iv.source = 0;
    const auto r = Run({clean_, corrupted_}, {iv});
    EXPECT_TRUE(AllClose("layer " + std::to_string(layer), r[1].logits.view(),
                         plain[0].logits.view(), 0));
  }
}

TEST_P(IdentityTest, AddAtResidPostEqualsAddAtTheNextResidPre) {
  const std::vector<float> v = RandomVector(c().d_model, 5);
  const auto plain = Run({clean_});
  for (int layer = 0; layer + 1 < c().n_layers; ++layer) {
    const std::string post = "blocks." + std::to_string(layer) + ".hook_resid_post";
    Intervention a = Make(post, InterventionOp::kAdd);
    a.value = {{c().d_model}, v};
    Intervention b = a;
    b.hook = Id("blocks." + std::to_string(layer + 1) + ".hook_resid_pre");
    const auto ra = Run({clean_}, {a}), rb = Run({clean_}, {b});
    EXPECT_TRUE(AllClose("logits", ra[0].logits.view(), rb[0].logits.view(), 0));
    const float* x = plain[0].cache.at(post).As<float>();
    const float* got = ra[0].cache.at(post).As<float>();
    for (int64_t i = 0; i < plain[0].cache.at(post).view().NumElements(); ++i) {
      ASSERT_EQ(got[i], x[i] + v[i % c().d_model]) << post << " element " << i;
    }
  }
}

TEST_P(IdentityTest, ZeroAblatingAHeadEqualsRecomputingAttnOutByHand) {
  auto source = OpenCheckpointSource(testing::FamilyDir(GetParam()));
  ASSERT_TRUE(source.ok());
  const int layer = c().n_layers - 1, head = c().n_heads - 1;
  auto weights = (*source)->Layer(layer);
  ASSERT_TRUE(weights.ok());
  const std::string L = "blocks." + std::to_string(layer);
  Intervention zero = Make(L + ".attn.hook_z", InterventionOp::kZero);
  zero.heads = {head};
  const auto ablated = Run({clean_}, {zero});
  const Buffer& z = ablated[0].cache.at(L + ".attn.hook_z");
  const int64_t P = static_cast<int64_t>(clean_.size()), D = c().d_model;
  const int64_t HD = int64_t{c().n_heads} * c().d_head;
  for (int64_t t = 0; t < P; ++t) {
    for (int64_t e = 0; e < c().d_head; ++e) ASSERT_EQ(z.As<float>()[t * HD + head * c().d_head + e], 0.0f);
  }
  // attn_out = W_O z + b_O (then its post-norm), in double from the captured (ablated) z.
  Buffer by_hand = Buffer::Host(DType::kF32, {1, P, D});
  for (int64_t t = 0; t < P; ++t) {
    for (int64_t d = 0; d < D; ++d) {
      double sum = weights->bo.empty() ? 0.0 : weights->bo.As<float>()[d];
      for (int64_t k = 0; k < HD; ++k) sum += double{weights->wo.As<float>()[d * HD + k]} * z.As<float>()[t * HD + k];
      by_hand.As<float>()[t * D + d] = static_cast<float>(sum);
    }
    // Post-norm families (Gemma 2, OLMo 2): attn_out is ln1_post (RMSNorm) of that.
    if (HasPostNorms(c().layers[layer].norms)) {
      float* row = by_hand.As<float>() + t * D;
      double squares = 0.0;
      for (int64_t d = 0; d < D; ++d) squares += double{row[d]} * row[d];
      const double inv = 1.0 / std::sqrt(squares / D + c().norm_eps);
      for (int64_t d = 0; d < D; ++d) {
        row[d] = static_cast<float>(row[d] * inv * weights->ln1_post_w.As<float>()[d]);
      }
    }
  }
  EXPECT_TRUE(AllClose("attn_out", ablated[0].cache.at(L + ".hook_attn_out").view(), by_hand.view(), 1e-5));
  // Setting attn_out to the hand-computed value gives the same downstream.
  Intervention set = Make(L + ".hook_attn_out", InterventionOp::kSet);
  set.value = {{1, P, D}, std::vector<float>(by_hand.As<float>(), by_hand.As<float>() + P * D)};
  const auto downstream = Run({clean_}, {set});
  EXPECT_TRUE(AllClose("logits", downstream[0].logits.view(), ablated[0].logits.view(), 1e-4));
}

TEST_P(IdentityTest, SettingEveryHookToItsCapturedValueChangesNothing) {
  const auto plain = Run({clean_});
  std::vector<Intervention> list;
  for (HookId id : AllHooks(c())) {
    if (IsCaptureOnly(id.point)) {
      Intervention iv;
      iv.hook = id, iv.op = InterventionOp::kZero;
      EXPECT_TRUE(testing::FailsWith(
          InterventionSet::Create(c(), {iv}, {static_cast<int>(clean_.size())}, false, 0).status(),
          absl::StatusCode::kInvalidArgument, "can be captured but not intervened on"));
      continue;
    }
    Intervention iv;
    iv.hook = id, iv.op = InterventionOp::kSet;
    // unembed.hook_out is the projection, before any final softcap (Gemma 2).
    const Buffer& value = plain[0].cache.at(HookName(id));
    iv.value.shape = value.shape().ToVector();
    iv.value.data.assign(value.As<float>(), value.As<float>() + value.view().NumElements());
    // Masked attention scores are -inf: set only the visible keys (a one-key slice each) —
    // the last query's row, which sees every key unless a sliding window hides some (then
    // no row is finite and the scores are left out; the pattern still is set).
    const int window = id.layer >= 0 ? c().layers[id.layer].attention.window : 0;
    if (id.point == HookPoint::kAttnScores && window > 0 &&
        window < static_cast<int>(clean_.size())) {
      continue;
    }
    if (id.point == HookPoint::kAttnScores) {
      iv.positions.kind = PositionSelector::Kind::kIndices, iv.positions.indices = {-1};
      iv.value.shape = {1, c().n_heads, 1, static_cast<int64_t>(clean_.size())};
      iv.value.data.clear();
      for (int h = 0; h < c().n_heads; ++h) {
        const float* row = value.As<float>() + ((h + 1) * clean_.size() - 1) * clean_.size();
        iv.value.data.insert(iv.value.data.end(), row, row + clean_.size());
      }
    }
    list.push_back(iv);
  }
  EXPECT_TRUE(Same(plain[0], Run({clean_}, list)[0]));
}

TEST_P(IdentityTest, SaeClampToItsOwnActivationChangesNothingAndToZeroSubtracts) {
  const std::string hook = "blocks.0.hook_resid_post";
  const int64_t D = c().d_model, P = static_cast<int64_t>(clean_.size());
  const std::vector<float> w = RandomVector(D, 1), u = RandomVector(D, 2), b_dec = RandomVector(D, 3);
  const auto plain = Run({clean_});
  const float* x = plain[0].cache.at(hook).As<float>();
  auto activation = [&](int64_t t) {
    float pre = 0.25f;  // the encoder bias, accumulated as the engine does
    for (int64_t i = 0; i < D; ++i) pre += (x[t * D + i] - b_dec[i]) * w[i];
    return pre > 0.0f ? pre : 0.0f;
  };
  Intervention sae = Make(hook, InterventionOp::kSaeClamp);
  sae.value = {{D}, w}, sae.decoder = {{D}, u}, sae.decoder_bias = {{D}, b_dec};
  sae.encoder_bias = 0.25f;
  int64_t active = 0;
  for (int64_t t = 0; t < P; ++t) {
    Intervention own = sae;
    own.positions.kind = PositionSelector::Kind::kIndices, own.positions.indices = {static_cast<int>(t)};
    own.target = activation(t);
    active += own.target > 0;
    EXPECT_TRUE(Same(plain[0], Run({clean_}, {own})[0])) << "position " << t;
  }
  EXPECT_GT(active, 0);
  sae.target = 0;
  const auto clamped = Run({clean_}, {sae});
  Buffer want = Buffer::Host(DType::kF32, {1, P, D});
  for (int64_t t = 0; t < P; ++t) {
    const float a = activation(t);
    for (int64_t i = 0; i < D; ++i) want.As<float>()[t * D + i] = x[t * D + i] + (0.0f - a) * u[i];
  }
  EXPECT_TRUE(AllClose(hook, clamped[0].cache.at(hook).view(), want.view(), 0));
}

TEST_P(IdentityTest, OpsAtOneHookComposeInRequestOrder) {
  const std::string hook = "blocks.0.hook_resid_post";
  const int64_t D = c().d_model;
  const std::vector<float> v = RandomVector(D, 9);
  Intervention scale = Make(hook, InterventionOp::kScale), add = Make(hook, InterventionOp::kAdd);
  scale.factor = 2.0f;
  add.value = {{D}, v};
  const auto plain = Run({clean_});
  const auto scale_then_add = Run({clean_}, {scale, add}), add_then_scale = Run({clean_}, {add, scale});
  const float* x = plain[0].cache.at(hook).As<float>();
  for (int64_t i = 0; i < plain[0].cache.at(hook).view().NumElements(); ++i) {
    ASSERT_EQ(scale_then_add[0].cache.at(hook).As<float>()[i], x[i] * 2.0f + v[i % D]);
    ASSERT_EQ(add_then_scale[0].cache.at(hook).As<float>()[i], (x[i] + v[i % D]) * 2.0f);
  }
}

TEST_P(IdentityTest, NoiseIsReproducibleAndSeedsDiffer) {
  // MoE layers have no hook_post (experts run on their tokens only): their output instead.
  const bool moe = c().layers[0].mlp == MlpKind::kMoe;
  const std::string hook = moe ? "blocks.0.hook_mlp_out" : "blocks.0.mlp.hook_post";
  Intervention noise = Make(hook, InterventionOp::kNoise);
  noise.std = 0.5f, noise.seed = 7;
  const auto a = Run({clean_}, {noise}), b = Run({clean_}, {noise});
  EXPECT_TRUE(Same(a[0], b[0]));
  noise.seed = 8;
  const auto other = Run({clean_}, {noise});
  EXPECT_FALSE(AllClose("seed", other[0].cache.at(hook).view(), a[0].cache.at(hook).view(), 1e-3));
  // The added noise has the asked standard deviation.
  const auto plain = Run({clean_});
  const Buffer& x = plain[0].cache.at(hook);
  double sum = 0, sq = 0;
  const int64_t n = x.view().NumElements();
  for (int64_t i = 0; i < n; ++i) {
    const double d = a[0].cache.at(hook).As<float>()[i] - x.As<float>()[i];
    sum += d, sq += d * d;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(sq / n), 0.5, 0.05);
}

TEST_P(IdentityTest, PatternEditsReachZThroughTheUnfusedPath) {
  // Every query of head h attends only to key 0: z there is v of key 0 (of h's KV head).
  const std::string L = "blocks.0";
  const int head = 1, kv_head = head / (c().n_heads / c().n_kv_heads);
  Intervention zero = Make(L + ".attn.hook_pattern", InterventionOp::kZero);
  zero.heads = {head};
  Intervention one = Make(L + ".attn.hook_pattern", InterventionOp::kSet);
  one.heads = {head};
  one.keys.kind = PositionSelector::Kind::kIndices, one.keys.indices = {0};
  one.value = {{1}, {1.0f}};
  const auto r = Run({clean_}, {zero, one});
  const Buffer& z = r[0].cache.at(L + ".attn.hook_z");
  const Buffer& v = r[0].cache.at(L + ".attn.hook_v");
  const int64_t dh = c().d_head, P = static_cast<int64_t>(clean_.size());
  for (int64_t t = 0; t < P; ++t) {
    for (int64_t e = 0; e < dh; ++e) {
      ASSERT_EQ(z.As<float>()[(t * c().n_heads + head) * dh + e],
                v.As<float>()[kv_head * dh + e]) << "query " << t;
    }
  }
  const Buffer& pattern = r[0].cache.at(L + ".attn.hook_pattern");
  EXPECT_EQ(pattern.As<float>()[(head * P + 5) * P + 0], 1.0f);
  EXPECT_EQ(pattern.As<float>()[(head * P + 5) * P + 3], 0.0f);
}

TEST_P(IdentityTest, GenerationWithSteeringEqualsRecomputingWithTheSameOp) {
  Intervention steer = Make("blocks.1.hook_resid_pre", InterventionOp::kAdd);
  steer.value = {{c().d_model}, RandomVector(c().d_model, 4)};
  steer.coeff = 3.0f;
  SamplingParams sp;
  sp.max_new_tokens = 8, sp.ignore_eos = true;
  auto set = InterventionSet::Create(c(), {steer}, {static_cast<int>(clean_.size())}, true,
                                     static_cast<int>(clean_.size()) + 8);
  ASSERT_TRUE(set.ok()) << set.status();
  auto generated = Generate(*model_, clean_, sp, nullptr, set->get());
  ASSERT_TRUE(generated.ok()) << generated.status();
  auto plain = Generate(*model_, clean_, sp);
  EXPECT_NE(generated->tokens, plain->tokens) << "the steering vector should change the output";
  std::vector<int32_t> ids = clean_;
  for (int k = 0; k < sp.max_new_tokens; ++k) {
    const auto r = Run({ids}, {steer});
    const float* last = r[0].logits.As<float>() + (ids.size() - 1) * c().vocab_size;
    ids.push_back(static_cast<int32_t>(std::max_element(last, last + c().vocab_size) - last));
  }
  EXPECT_EQ(std::vector<int32_t>(ids.begin() + clean_.size(), ids.end()), generated->tokens);
  EXPECT_EQ(model_->blocks().num_free(), model_->blocks().num_blocks());
}

INSTANTIATE_TEST_SUITE_P(Families, IdentityTest,
                         ::testing::Values("gpt2", "llama", "qwen2", "gpt_neox", "qwen3", "olmo2",
                                           "gemma2", "gemma3_text", "phi3", "phi3_longrope",
                                           "mixtral", "qwen3_moe", "qwen3_moe_sparse"));

}  // namespace
}  // namespace lensd
