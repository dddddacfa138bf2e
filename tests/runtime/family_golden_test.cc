// The families added after the first five (Qwen3, OLMo 2, Gemma 2) against references made by
// tools/reference/make_family_goldens.py: Hugging Face transformers logits and greedy ids, and
// every hook of TransformerLens's bridge (compatibility mode, no processing). Every hook lensd
// serves must be in the reference and match; the reference's hooks lensd does not serve yet are
// listed here, so that one going missing, or one being added, changes this test.
#include <set>

#include "absl/strings/match.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::AllClose;

struct FamilyCase {
  std::string family;
  // Hook suffixes (after "blocks.L.") in the reference that lensd does not serve.
  std::set<std::string> not_served;
  // Hook suffixes lensd serves that the reference (TransformerLens's bridge) lacks.
  std::set<std::string> not_in_reference = {};
};

const std::set<std::string> kQkNormHooks = {
    "attn.q_norm.hook_scale", "attn.q_norm.hook_normalized", "attn.hook_q_normed",
    "attn.k_norm.hook_scale", "attn.k_norm.hook_normalized", "attn.hook_k_normed"};

// The bridge's MoE hooks: mlp.hook_pre / hook_post alias the block's MLP input and output
// ([1, P, D]); the routing ones (also under mlp.gate.) have no batch axis ([P, E], [P, k]).
const std::set<std::string> kMoeHooks = {
    "mlp.hook_pre",           "mlp.hook_post",          "mlp.hook_expert_weights",
    "mlp.hook_expert_indices", "mlp.gate.hook_expert_weights", "mlp.gate.hook_expert_indices"};

std::set<std::string> Union(std::set<std::string> a, const std::set<std::string>& b) {
  a.insert(b.begin(), b.end());
  return a;
}

std::string Suffix(const std::string& name) {
  if (!absl::StartsWith(name, "blocks.")) return name;
  const size_t dot = name.find('.', 7);
  return name.substr(dot + 1);
}

class FamilyGoldenTest : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(FamilyGoldenTest, EveryServedHookLogitsAndGreedyMatchReference) {
  const FamilyCase& fc = GetParam();
  const std::string dir = testing::FamiliesDir() + "/" + fc.family;
  auto ref = SafetensorsFile::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  LoadOptions options;
  options.model_dir = dir;
  options.devices = "cpu";
  auto model = Model::Load(options);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const std::string p : {"p0", "p1"}) {
    const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find(p + ".input_ids"));
    auto result = RunWithCache(**model, ids, HookSelection::All((*model)->config()));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(AllClose(p + ".logits", result->logits.view(),
                         testing::ToF32(*(*ref)->Find(p + ".logits")).view(), 1e-4));
    std::set<std::string> missing;
    for (const auto& [key, info] : (*ref)->tensors()) {
      if (!absl::StartsWith(key, p + ".")) continue;
      const std::string name = key.substr(p.size() + 1);
      if (name == "input_ids" || name == "greedy" || name == "logits") continue;
      auto it = result->cache.find(name);
      if (it == result->cache.end()) {
        missing.insert(Suffix(name));
        continue;
      }
      EXPECT_TRUE(AllClose(key, it->second.view(), testing::ToF32(info).view(), 1e-4));
    }
    EXPECT_EQ(missing, fc.not_served) << p;
    std::set<std::string> unchecked;
    for (const auto& [name, value] : result->cache) {
      if ((*ref)->Find(p + "." + name) == nullptr) unchecked.insert(Suffix(name));
    }
    EXPECT_EQ(unchecked, fc.not_in_reference) << p;
    const std::vector<int32_t> greedy = testing::ToIds(*(*ref)->Find(p + ".greedy"));
    SamplingParams sp;
    sp.max_new_tokens = static_cast<int>(greedy.size() - ids.size());
    sp.ignore_eos = true;
    auto gen = Generate(**model, ids, sp);
    ASSERT_TRUE(gen.ok()) << gen.status();
    std::vector<int32_t> full = ids;
    full.insert(full.end(), gen->tokens.begin(), gen->tokens.end());
    EXPECT_EQ(full, greedy) << p << " greedy ids";
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyGoldenTest,
                         ::testing::Values(FamilyCase{"qwen3", kQkNormHooks},
                                           FamilyCase{"olmo2", kQkNormHooks},
                                           FamilyCase{"gemma2", {}},
                                           FamilyCase{"gemma3_text", kQkNormHooks},
                                           // The bridge's Phi-3 has no rot_q / rot_k, and an
                                           // alias of the attention input.
                                           FamilyCase{"phi3",
                                                      {"attn.hook_hidden_states"},
                                                      {"attn.hook_rot_q", "attn.hook_rot_k"}},
                                           FamilyCase{"mixtral", kMoeHooks},
                                           FamilyCase{"qwen3_moe", Union(kMoeHooks, kQkNormHooks)}),
                         [](const auto& info) { return info.param.family; });

}  // namespace
}  // namespace lensd
