// The families added after the first five (Qwen3, OLMo 2, Gemma 2) against references made by
// tools/reference/make_family_goldens.py: Hugging Face transformers logits and greedy ids, and
// every hook of TransformerLens's bridge (compatibility mode, no processing). Every hook lensd
// serves must be in the reference and match; the reference's hooks lensd does not serve yet are
// listed here, so that one going missing, or one being added, changes this test.
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "engine/model/json_fields.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "engine/runtime/processing.h"
#include "nlohmann/json.hpp"
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

std::string Suffix(const std::string& name) {
  if (!absl::StartsWith(name, "blocks.")) return name;
  const size_t dot = name.find('.', 7);
  return name.substr(dot + 1);
}

class FamilyGoldenTest : public ::testing::TestWithParam<FamilyCase> {
 protected:
  // Every hook of `file` (reference.safetensors, or processed.safetensors with processing)
  // against the model loaded with `processing`; the greedy ids of reference.safetensors.
  void ExpectMatches(const std::string& file, const std::string& processing);
};

TEST_P(FamilyGoldenTest, EveryServedHookLogitsAndGreedyMatchReference) {
  ExpectMatches("reference.safetensors", "none");
}

// TransformerLens's default weight processing, as its bridge applies it to the family.
TEST_P(FamilyGoldenTest, WithTransformerLensProcessing) {
  ExpectMatches("processed.safetensors", "transformer-lens");
}

void FamilyGoldenTest::ExpectMatches(const std::string& file, const std::string& processing) {
  const FamilyCase& fc = GetParam();
  const std::string dir = testing::FamiliesDir() + "/" + fc.family;
  auto ref = SafetensorsFile::Open(dir + "/" + file);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto greedy = SafetensorsFile::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  LoadOptions options;
  options.model_dir = dir;
  options.devices = "cpu";
  auto parsed = ParseProcessing(processing);
  ASSERT_TRUE(parsed.ok());
  options.processing = *parsed;
  auto model = Model::Load(options);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const std::string p : {"p0", "p1"}) {
    const std::vector<int32_t> ids = testing::ToIds(*(*greedy)->Find(p + ".input_ids"));
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
    EXPECT_TRUE(
        testing::GreedyIdsAre(**model, ids, testing::ToIds(*(*greedy)->Find(p + ".greedy"))))
        << p;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyGoldenTest,
                         ::testing::Values(FamilyCase{"qwen3", {}}, FamilyCase{"olmo2", {}},
                                           FamilyCase{"gemma2", {}}, FamilyCase{"gemma3_text", {}},
                                           // The bridge's Phi-3 has no rot_q / rot_k, and an
                                           // alias of the attention input.
                                           FamilyCase{"phi3",
                                                      {"attn.hook_hidden_states"},
                                                      {"attn.hook_rot_q", "attn.hook_rot_k"}},
                                           FamilyCase{"phi3_longrope",
                                                      {"attn.hook_hidden_states"},
                                                      {"attn.hook_rot_q", "attn.hook_rot_k"}},
                                           FamilyCase{"mixtral", {}}, FamilyCase{"qwen3_moe", {}},
                                           FamilyCase{"qwen3_moe_sparse", {}}),
                         [](const auto& info) { return info.param.family; });

// A multimodal Gemma 3 checkpoint ("gemma3": the text model's config under text_config, its
// tensors under language_model.model., a vision tower beside): the text tower loads and gives
// the text model's logits bit for bit.
TEST(Gemma3Multimodal, TextTowerEqualsTheTextModel) {
  const std::string text_dir = testing::FamiliesDir() + "/gemma3_text";
  const std::string dir = testing::TempDir("gemma3_multimodal");
  auto text_config = ReadFileToString(text_dir + "/config.json");
  ASSERT_TRUE(text_config.ok()) << text_config.status();
  nlohmann::json config = {{"model_type", "gemma3"},
                           {"architectures", {"Gemma3ForConditionalGeneration"}},
                           {"text_config", nlohmann::json::parse(*text_config)},
                           {"vision_config", {{"model_type", "siglip_vision_model"}}}};
  std::ofstream(dir + "/config.json") << config.dump();
  auto src = SafetensorsFile::Open(text_dir + "/model.safetensors");
  ASSERT_TRUE(src.ok()) << src.status();
  SafetensorsWriter out;
  for (const auto& [name, info] : (*src)->tensors()) {
    out.Add("language_model." + name, info.dtype, info.shape, info.data, info.num_bytes);
  }
  const float vision[4] = {1, 2, 3, 4};  // a stand-in for the vision tower, not loaded
  out.Add("vision_tower.vision_model.post_layernorm.weight", DType::kF32, {4}, vision, 16);
  ASSERT_TRUE(out.WriteFile(dir + "/model.safetensors").ok());
  LoadOptions a, b;
  a.model_dir = text_dir, b.model_dir = dir;
  auto text = Model::Load(a), multimodal = Model::Load(b);
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_TRUE(multimodal.ok()) << multimodal.status();
  EXPECT_EQ((*multimodal)->config().model_type, "gemma3");
  const std::vector<int32_t> ids = {2, 17, 293, 5, 804, 61, 12};
  auto x = RunWithCache(**text, ids, HookSelection::None((*text)->config()));
  auto y = RunWithCache(**multimodal, ids, HookSelection::None((*multimodal)->config()));
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_TRUE(AllClose("logits", y->logits.view(), x->logits.view(), 0));
  std::ofstream(dir + "/config.json") << nlohmann::json{{"model_type", "gemma3"}}.dump();
  EXPECT_TRUE(testing::FailsWith(Model::Load(b).status(), absl::StatusCode::kInvalidArgument,
                                 "missing object 'text_config'"));
}

}  // namespace
}  // namespace lensd
