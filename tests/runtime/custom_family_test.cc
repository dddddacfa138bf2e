// A new family takes one spec: a Llama variant with post-norms (Gemma 2's placement, norms
// before and after each sublayer, and OLMo 2's, after only) defined here alone — its config
// parser and tensor table under names of its own — loads, runs and caches. Checked against
// the definition of a post-norm block, recomputed in double precision from the captured hooks
// and the checkpoint's own matrices, and cached decode against full recomputation.
#include <cmath>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/core/status.h"
#include "engine/model/families/llama_layout.h"
#include "engine/model/family.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using W = LayerWeights;

absl::Status ParseWith(const nlohmann::json& j, ModelConfig& c, NormPlacement norms) {
  ASSIGN_OR_RETURN(LayerSpec layer, ParseLlamaBlock(j, 1e-6, c));  // as families do
  layer.norms = norms;
  SetUniformLayers(c, layer);
  return absl::OkStatus();
}

absl::Status ParseSandwich(const nlohmann::json& j, ModelConfig& c) {
  return ParseWith(j, c, NormPlacement::kPreAndPost);
}
absl::Status ParsePostOnly(const nlohmann::json& j, ModelConfig& c) {
  return ParseWith(j, c, NormPlacement::kPost);
}

FamilySpec PostNormFamily(NormPlacement norms) {
  return {.model_type = "llama_post_norms",
          .parse_config = norms == NormPlacement::kPost ? ParsePostOnly : ParseSandwich,
          .layer_prefix = "blocks.",
          .layer = {{"attn_norm.weight", Layout::kLinear, {&W::ln1_w}},
                    {"mlp_norm.weight", Layout::kLinear, {&W::ln2_w}},
                    {"attn.q.weight", Layout::kLinear, {&W::wq}},
                    {"attn.k.weight", Layout::kLinear, {&W::wk}},
                    {"attn.v.weight", Layout::kLinear, {&W::wv}},
                    {"attn.o.weight", Layout::kLinear, {&W::wo}},
                    {"attn_out_norm.weight", Layout::kLinear, {&W::ln1_post_w}},
                    {"mlp.gate.weight", Layout::kLinear, {&W::w_in}},
                    {"mlp.up.weight", Layout::kLinear, {&W::w_up}},
                    {"mlp.down.weight", Layout::kLinear, {&W::w_out}},
                    {"mlp_out_norm.weight", Layout::kLinear, {&W::ln2_post_w}}},
          .embed = "tok_embeddings.weight",
          .position_embed = {},
          .final_norm = "norm",
          .unembed = "output.weight",
          .nested_prefix = {}};
}

// The golden Llama checkpoint under this family's names, plus random post-norm weights.
std::string WriteCheckpoint(const std::string& tag) {
  const std::string golden = testing::GoldenDir() + "/llama", dir = testing::TempDir(tag);
  std::ifstream in(golden + "/config.json");
  const std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir + "/config.json")
      << absl::StrReplaceAll(config, {{"\"llama\"", "\"llama_post_norms\""}});
  auto src = SafetensorsFile::Open(golden + "/model.safetensors");
  EXPECT_TRUE(src.ok()) << src.status();
  SafetensorsWriter out;
  for (const auto& [name, info] : (*src)->tensors()) {
    const std::string renamed = absl::StrReplaceAll(
        name, {{"model.layers.", "blocks."}, {"input_layernorm", "attn_norm"},
               {"post_attention_layernorm", "mlp_norm"}, {"self_attn.", "attn."},
               {"_proj", ""}, {"model.embed_tokens", "tok_embeddings"}, {"model.norm", "norm"},
               {"lm_head", "output"}});
    out.Add(renamed, info.dtype, info.shape, info.data, info.num_bytes);
  }
  std::mt19937 rng(5);
  std::normal_distribution<float> near_one(1.0f, 0.3f);
  std::vector<float> w(64);
  for (int layer = 0; layer < 3; ++layer) {
    for (const char* norm : {"attn_out_norm", "mlp_out_norm"}) {
      for (float& v : w) v = near_one(rng);
      out.Add(absl::StrCat("blocks.", layer, ".", norm, ".weight"), DType::kF32, {64}, w.data(),
              w.size() * 4);
    }
  }
  EXPECT_TRUE(out.WriteFile(dir + "/model.safetensors").ok());
  return dir;
}

// rows [P, N] = x [P, K] · m[N, K]ᵀ in double, as float32.
Buffer TimesTransposed(const Buffer& x, const Buffer& m) {
  const int64_t P = x.shape()[0], K = x.shape()[1], N = m.shape()[0];
  Buffer out = Buffer::Host(DType::kF32, {P, N});
  for (int64_t p = 0; p < P; ++p) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += double{x.As<float>()[p * K + k]} * m.As<float>()[n * K + k];
      out.As<float>()[p * N + n] = static_cast<float>(acc);
    }
  }
  return out;
}

Buffer Flat(const Buffer& b, int64_t rows) {
  Buffer out = Buffer::Host(DType::kF32, {rows, b.shape().NumElements() / rows});
  std::copy(b.As<float>(), b.As<float>() + b.shape().NumElements(), out.As<float>());
  return out;
}

// RMSNorm of each row of `a` [P, D]: the scale [P], normalized and weighted rows.
struct Normed {
  Buffer scale, normalized, out;
};
Normed RmsNorm(const Buffer& a, const Buffer& w, double eps) {
  const int64_t P = a.shape()[0], D = a.shape()[1];
  Normed n{Buffer::Host(DType::kF32, {P, 1}), Buffer::Host(DType::kF32, {P, D}),
           Buffer::Host(DType::kF32, {P, D})};
  for (int64_t p = 0; p < P; ++p) {
    double ms = 0;
    for (int64_t d = 0; d < D; ++d) ms += double{a.As<float>()[p * D + d]} * a.As<float>()[p * D + d];
    const double scale = std::sqrt(ms / D + eps);
    n.scale.As<float>()[p] = static_cast<float>(scale);
    for (int64_t d = 0; d < D; ++d) {
      const double v = a.As<float>()[p * D + d] / scale;
      n.normalized.As<float>()[p * D + d] = static_cast<float>(v);
      n.out.As<float>()[p * D + d] = static_cast<float>(v * w.As<float>()[d]);
    }
  }
  return n;
}

Buffer Sum(const Buffer& a, const Buffer& b) {
  Buffer out = Flat(a, a.shape()[0]);
  for (int64_t i = 0; i < a.shape().NumElements(); ++i) out.As<float>()[i] += b.As<float>()[i];
  return out;
}

class CustomFamilyTest : public ::testing::TestWithParam<NormPlacement> {};

TEST_P(CustomFamilyTest, PostNormBlocksFollowTheirDefinition) {
  const NormPlacement norms = GetParam();
  const FamilySpec family = PostNormFamily(norms);
  const std::string dir = WriteCheckpoint(norms == NormPlacement::kPost ? "post_only" : "sandwich");
  auto source = OpenCheckpointSource(dir, family);
  ASSERT_TRUE(source.ok()) << source.status();
  LoadOptions options;
  options.devices = "cpu";
  auto model = Model::FromSource(**source, options);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.model_type, "llama_post_norms");
  auto ck = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(ck.ok());
  auto weight = [&](int layer, const char* name) {
    return testing::ToF32(*(*ck)->Find(absl::StrCat("blocks.", layer, ".", name, ".weight")));
  };
  const std::vector<int32_t> ids = {3, 14, 15, 92, 65, 35, 89, 79, 32};
  const int64_t P = static_cast<int64_t>(ids.size()), D = c.d_model;
  auto run = RunWithCache(**model, ids, HookSelection::All(c));
  ASSERT_TRUE(run.ok()) << run.status();
  auto hook = [&](int layer, const char* suffix) -> const Buffer& {
    const auto it = run->cache.find(absl::StrCat("blocks.", layer, ".", suffix));
    EXPECT_NE(it, run->cache.end()) << suffix;
    return it->second;
  };
  for (int l = 0; l < c.n_layers; ++l) {
    EXPECT_EQ(run->cache.count(absl::StrCat("blocks.", l, ".ln1.hook_scale")),
              norms == NormPlacement::kPost ? 0u : 1u);
    const Buffer resid_pre = Flat(hook(l, "hook_resid_pre"), P);
    if (norms == NormPlacement::kPost) {  // attention reads the residual itself
      EXPECT_TRUE(testing::AllClose("q", Flat(hook(l, "attn.hook_q"), P).view(),
                                    TimesTransposed(resid_pre, weight(l, "attn.q")).view(), 1e-4));
    }
    const Buffer attn = TimesTransposed(Flat(hook(l, "attn.hook_z"), P), weight(l, "attn.o"));
    const Normed a = RmsNorm(attn, weight(l, "attn_out_norm"), c.norm_eps);
    EXPECT_TRUE(testing::AllClose("ln1_post scale", Flat(hook(l, "ln1_post.hook_scale"), P).view(),
                                  a.scale.view(), 1e-4));
    EXPECT_TRUE(testing::AllClose("ln1_post normalized",
                                  Flat(hook(l, "ln1_post.hook_normalized"), P).view(),
                                  a.normalized.view(), 1e-4));
    EXPECT_TRUE(testing::AllClose("attn_out", Flat(hook(l, "hook_attn_out"), P).view(),
                                  a.out.view(), 1e-4));
    const Buffer resid_mid = Sum(resid_pre, a.out);
    EXPECT_TRUE(testing::AllClose("resid_mid", Flat(hook(l, "hook_resid_mid"), P).view(),
                                  resid_mid.view(), 1e-4));
    const Buffer mlp = TimesTransposed(Flat(hook(l, "mlp.hook_post"), P), weight(l, "mlp.down"));
    const Normed m = RmsNorm(mlp, weight(l, "mlp_out_norm"), c.norm_eps);
    EXPECT_TRUE(testing::AllClose("ln2_post normalized",
                                  Flat(hook(l, "ln2_post.hook_normalized"), P).view(),
                                  m.normalized.view(), 1e-4));
    EXPECT_TRUE(testing::AllClose("mlp_out", Flat(hook(l, "hook_mlp_out"), P).view(),
                                  m.out.view(), 1e-4));
    EXPECT_TRUE(testing::AllClose("resid_post", Flat(hook(l, "hook_resid_post"), P).view(),
                                  Sum(resid_mid, m.out).view(), 1e-4));
    EXPECT_EQ(D, resid_pre.shape()[1]);
  }
  // Cached decode equals full recomputation: each generated token is the argmax of the full
  // pass over everything before it.
  SamplingParams sp;
  sp.max_new_tokens = 6, sp.ignore_eos = true;
  auto gen = Generate(**model, ids, sp);
  ASSERT_TRUE(gen.ok()) << gen.status();
  std::vector<int32_t> all = ids;
  all.insert(all.end(), gen->tokens.begin(), gen->tokens.end() - 1);
  auto full = RunWithCache(**model, all, HookSelection::None(c));
  ASSERT_TRUE(full.ok()) << full.status();
  for (size_t i = 0; i < gen->tokens.size(); ++i) {
    const float* row = full->logits.As<float>() + (P - 1 + i) * c.vocab_size;
    EXPECT_EQ(std::max_element(row, row + c.vocab_size) - row, gen->tokens[i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Placements, CustomFamilyTest,
                         ::testing::Values(NormPlacement::kPreAndPost, NormPlacement::kPost),
                         [](const auto& info) {
                           return info.param == NormPlacement::kPost ? "PostOnly" : "PreAndPost";
                         });

TEST(CustomFamily, RegisteredFamiliesAreUntouchedByIt) {
  EXPECT_EQ(FindFamily("llama_post_norms"), nullptr);
  EXPECT_NE(FindFamily("llama"), nullptr);
  EXPECT_TRUE(testing::FailsWith(
      LoadModelConfig(WriteCheckpoint("unregistered") + "/config.json").status(),
      absl::StatusCode::kUnimplemented, "model_type='llama_post_norms'"));
}

}  // namespace
}  // namespace lensd
