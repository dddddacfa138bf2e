// Refactors of the forward pass must not change a single bit: every hook, the logits and
// generated ids of each golden family, in several load configurations, against a digest saved
// from the code before (tests/data/bit_identity/cpu.json). The CPU kernels give the same bits on
// every dispatch level and thread count (gemm and kernel tests), so the digest holds on any x86.
//
// To record it again, deliberately (a change that is meant to alter results):
//   LENSD_WRITE_BIT_IDENTITY=$PWD/tests/data/bit_identity/cpu.json
//   build/tests/runtime_test --gtest_filter='*BitIdentity*'
#include <nlohmann/json.hpp>

#include <cinttypes>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

// FNV-1a over the bytes, as 16 hex digits: a changed bit changes it.
std::string Digest(const void* data, size_t bytes) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  char out[17];
  std::snprintf(out, sizeof(out), "%016" PRIx64, h);
  return out;
}

std::string Digest(const Buffer& b) { return Digest(b.view().data, b.NumBytes()); }

struct Configuration {
  std::string name;
  LoadOptions options;
};

std::vector<Configuration> Configurations(const std::string& dir) {
  std::vector<Configuration> out(5);
  for (auto& c : out) c.options.model_dir = dir, c.options.devices = "cpu";
  out[0].name = "f32";
  out[1].name = "f32_processed";
  out[1].options.processing = *ParseProcessing("transformer-lens");
  out[2].name = "bf16";
  out[2].options.dtype = DType::kBF16;
  out[3].name = "f16_pipeline";
  out[3].options.dtype = DType::kF16;
  out[3].options.devices = "cpu:0,cpu:1";
  out[4].name = "f32_tensor_parallel";
  out[4].options.devices = "cpu:0,cpu:1";
  out[4].options.tensor_parallel = 2;
  return out;
}

// What one configuration computes for the golden prompts: each prompt alone (every hook and
// the logits), both together with an intervention, greedy and sampled generation.
nlohmann::json RunAll(Model& model, const std::vector<std::vector<int32_t>>& prompts) {
  nlohmann::json out;
  const HookSelection all = HookSelection::All(model.config());
  for (size_t p = 0; p < prompts.size(); ++p) {
    auto r = RunWithCache(model, prompts[p], all);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return out;
    nlohmann::json& prompt = out[absl::StrCat("p", p)];
    prompt["logits"] = Digest(r->logits);
    for (const auto& [name, buffer] : r->cache) prompt["hooks"][name] = Digest(buffer);
    SamplingParams sp;
    sp.max_new_tokens = 12, sp.ignore_eos = true;
    prompt["greedy"] = Generate(model, prompts[p], sp)->tokens;
    sp.temperature = 0.8f, sp.top_p = 0.9f, sp.seed = 7 + p;
    prompt["sampled"] = Generate(model, prompts[p], sp)->tokens;
  }
  Intervention steer;
  steer.hook = {HookPoint::kResidPost, 0}, steer.op = InterventionOp::kAdd, steer.coeff = 2;
  steer.value = {{model.config().d_model}, std::vector<float>(model.config().d_model, 0.25f)};
  std::vector<int> lengths;
  for (const auto& p : prompts) lengths.push_back(static_cast<int>(p.size()));
  auto set = InterventionSet::Create(model.config(), {steer}, lengths, false, lengths.back());
  EXPECT_TRUE(set.ok()) << set.status();
  auto batch = RunWithCache(model, prompts, all, set->get());
  EXPECT_TRUE(batch.ok()) << batch.status();
  if (!batch.ok()) return out;
  for (size_t p = 0; p < prompts.size(); ++p) {
    out["steered"][absl::StrCat("p", p)] = Digest((*batch)[p].logits);
  }
  return out;
}

// Beside the golden models (tests/data), wherever a bundle puts them.
std::string SnapshotPath() { return testing::GoldenDir() + "/../bit_identity/cpu.json"; }

class BitIdentityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BitIdentityTest, EveryConfigurationEqualsTheSavedRun) {
  const std::string family = GetParam();
  const std::string dir = testing::FamilyDir(family);
  const std::vector<std::vector<int32_t>> prompts = {testing::ReferencePrompt(family, 0),
                                                     testing::ReferencePrompt(family, 1)};
  nlohmann::json got;
  for (const Configuration& c : Configurations(dir)) {
    auto model = Model::Load(c.options);
    ASSERT_TRUE(model.ok()) << c.name << ": " << model.status();
    got[c.name] = RunAll(**model, prompts);
  }
  const char* write = std::getenv("LENSD_WRITE_BIT_IDENTITY");
  if (write != nullptr) {
    nlohmann::json all;
    std::ifstream old(write);
    if (old) all = nlohmann::json::parse(old);
    all[family] = got;
    std::ofstream(write) << all.dump(1) << "\n";
    GTEST_SKIP() << "recorded " << family << " into " << write;
  }
  std::ifstream in(SnapshotPath());
  ASSERT_TRUE(in) << SnapshotPath();
  const nlohmann::json saved = nlohmann::json::parse(in)[family];
  ASSERT_FALSE(saved.is_null()) << family << " has no saved run";
  // Compared entry by entry, so a failure names the configuration, prompt and tensor.
  for (const auto& [config, runs] : saved.items()) {
    ASSERT_TRUE(got.contains(config)) << config;
    const nlohmann::json diff = nlohmann::json::diff(runs, got[config]);
    EXPECT_TRUE(diff.empty()) << family << " " << config << " differs from the saved run: "
                              << diff.dump().substr(0, 2000);
  }
  EXPECT_EQ(saved.size(), got.size());
}

INSTANTIATE_TEST_SUITE_P(Families, BitIdentityTest,
                         ::testing::Values("gpt2", "llama", "qwen2", "gpt_neox"));

}  // namespace
}  // namespace lensd
