// Every hook, logits and greedy ids of the four golden families against TransformerLens
// 3.5.1 references, with and without TransformerLens weight processing; plus the trained
// stories260K checkpoint against llama2.c's run.c greedy ids.
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::AllClose;
using testing::SharedDir;
using testing::GoldenDir;

struct GoldenCase {
  std::string family;
  bool processed;
};

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, EveryHookLogitsAndGreedyMatchReference) {
  const GoldenCase& gc = GetParam();
  const std::string dir = testing::FamilyDir(gc.family);
  auto ref = SafetensorsFile::Open(dir + (gc.processed ? "/processed.safetensors" : "/reference.safetensors"));
  ASSERT_TRUE(ref.ok()) << ref.status();
  LoadOptions options;
  options.model_dir = dir;
  options.processing = *ParseProcessing(gc.processed ? "transformer-lens" : "none");
  auto model = Model::Load(options);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const std::string p : {"p0", "p1"}) {
    const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find(p + ".input_ids"));
    auto result = RunWithCache(**model, ids, HookSelection::All((*model)->config()));
    ASSERT_TRUE(result.ok()) << result.status();
    std::set<std::string> expected;
    for (const auto& [key, info] : (*ref)->tensors()) {
      if (!absl::StartsWith(key, p + ".")) continue;
      const std::string name = key.substr(p.size() + 1);
      if (name == "input_ids" || name == "greedy") continue;
      Buffer want = testing::ToF32(info);
      if (name == "logits") {
        EXPECT_TRUE(AllClose(key, result->logits.view(), want.view(), 1e-4));
        continue;
      }
      expected.insert(name);
      auto it = result->cache.find(name);
      ASSERT_NE(it, result->cache.end()) << "missing hook " << name;
      EXPECT_TRUE(AllClose(key, it->second.view(), want.view(), 1e-4));
    }
    EXPECT_EQ(expected.size(), result->cache.size()) << "hook sets differ";
    // Greedy ids always come from reference.safetensors: weight processing preserves the
    // function (logits move by a per-row constant), and gpt2's processed.safetensors p1.greedy
    // contradicts its own model after the 4th new token (417 beats 929 by 3.04 logits there,
    // processed or not) — the TransformerLens cached-generate defect DESIGN.md warns about.
    auto unprocessed = SafetensorsFile::Open(dir + "/reference.safetensors");
    ASSERT_TRUE(unprocessed.ok()) << unprocessed.status();
    EXPECT_TRUE(testing::GreedyIdsAre(**model, ids,
                                      testing::ToIds(*(*unprocessed)->Find(p + ".greedy"))))
        << p;
  }
  EXPECT_EQ((*model)->blocks().num_free(), (*model)->blocks().num_blocks());
}

INSTANTIATE_TEST_SUITE_P(
    Families, GoldenTest,
    ::testing::Values(GoldenCase{"gpt2", false}, GoldenCase{"gpt2", true},
                      GoldenCase{"llama", false}, GoldenCase{"llama", true},
                      GoldenCase{"qwen2", false}, GoldenCase{"qwen2", true},
                      GoldenCase{"gpt_neox", false}, GoldenCase{"gpt_neox", true}),
    [](const auto& info) {
      return info.param.family + (info.param.processed ? "_processed" : "_reference");
    });

TEST(Stories260K, GreedyMatchesLlama2cRunC) {
  LENSD_REQUIRE_SHARED("reference-models/stories260K");
  const std::string dir = SharedDir() + "/reference-models/stories260K";
  std::ifstream in(dir + "/greedy_runc_ids.txt");
  std::vector<int32_t> want;
  for (int id; in >> id;) want.push_back(id);
  ASSERT_GE(want.size(), 200u);
  LoadOptions options;
  options.model_dir = dir;
  auto model = Model::Load(options);
  ASSERT_TRUE(model.ok()) << model.status();
  SamplingParams sp;
  sp.max_new_tokens = 200;
  sp.ignore_eos = true;
  auto gen = Generate(**model, {1}, sp);
  ASSERT_TRUE(gen.ok()) << gen.status();
  std::vector<int32_t> got = gen->tokens;
  want.resize(200);
  EXPECT_EQ(got, want);
}

// Weight matrices in bfloat16 / float16 (GEMM inputs rounded to that dtype, float32
// accumulation and activations): every hook and the logits stay within the dtype's stated
// tolerance of the float32 reference, on every golden family.
struct ReducedCase {
  std::string family;
  DType dtype;
  double tol;  // × max(1, max|ref|), as AllClose
};

class ReducedPrecisionTest : public ::testing::TestWithParam<ReducedCase> {};

TEST_P(ReducedPrecisionTest, EveryHookAndLogitsCloseToFloat32Reference) {
  const ReducedCase& rc = GetParam();
  const std::string dir = testing::FamilyDir(rc.family);
  auto ref = SafetensorsFile::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  LoadOptions options;
  options.model_dir = dir;
  options.dtype = rc.dtype;
  auto model = Model::Load(options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->dtype(), rc.dtype);
  // The matrices really are stored in the narrow dtype: about half the float32 bytes.
  options.dtype = DType::kF32;
  auto f32 = Model::Load(options);
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_LT((*model)->Devices()[0].weight_bytes, 0.6 * (*f32)->Devices()[0].weight_bytes);
  for (const std::string p : {"p0", "p1"}) {
    const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find(p + ".input_ids"));
    auto result = RunWithCache(**model, ids, HookSelection::All((*model)->config()));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(AllClose(p + ".logits", result->logits.view(),
                         testing::ToF32(*(*ref)->Find(p + ".logits")).view(), rc.tol));
    for (const auto& [name, got] : result->cache) {
      const TensorInfo* info = (*ref)->Find(p + "." + name);
      if (info == nullptr) continue;  // not in a bridge reference: FamilyGoldenTest lists those
      EXPECT_TRUE(AllClose(p + "." + name, got.view(), testing::ToF32(*info).view(), rc.tol));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Families, ReducedPrecisionTest,
    // Measured worst cases (weights and KV cache in the dtype): bfloat16 0.025 (llama),
    // float16 0.0031 (qwen2); about 2x margin.
    ::testing::Values(
        ReducedCase{"gpt2", DType::kBF16, 6e-2}, ReducedCase{"gpt2", DType::kF16, 6e-3},
        ReducedCase{"llama", DType::kBF16, 6e-2}, ReducedCase{"llama", DType::kF16, 6e-3},
        ReducedCase{"qwen2", DType::kBF16, 6e-2}, ReducedCase{"qwen2", DType::kF16, 6e-3},
        ReducedCase{"gpt_neox", DType::kBF16, 6e-2}, ReducedCase{"gpt_neox", DType::kF16, 6e-3},
        ReducedCase{"qwen3", DType::kBF16, 6e-2}, ReducedCase{"qwen3", DType::kF16, 6e-3},
        ReducedCase{"olmo2", DType::kBF16, 6e-2}, ReducedCase{"olmo2", DType::kF16, 6e-3},
        // Gemma 2's post-norms rescale small sublayer outputs to unit RMS, which magnifies
        // their rounding: measured worst bfloat16 0.062, float16 0.0061
        // (blocks.3.ln1_post.hook_normalized, p1); about 2x margin.
        ReducedCase{"gemma2", DType::kBF16, 1.2e-1}, ReducedCase{"gemma2", DType::kF16, 1.2e-2},
        ReducedCase{"gemma3_text", DType::kBF16, 6e-2},
        ReducedCase{"gemma3_text", DType::kF16, 6e-3}, ReducedCase{"phi3", DType::kBF16, 6e-2},
        ReducedCase{"phi3", DType::kF16, 6e-3}, ReducedCase{"phi3_longrope", DType::kBF16, 6e-2},
        ReducedCase{"phi3_longrope", DType::kF16, 6e-3}, ReducedCase{"mixtral", DType::kBF16, 6e-2},
        ReducedCase{"mixtral", DType::kF16, 6e-3}, ReducedCase{"qwen3_moe", DType::kBF16, 6e-2},
        ReducedCase{"qwen3_moe", DType::kF16, 6e-3},
        ReducedCase{"qwen3_moe_sparse", DType::kBF16, 6e-2},
        ReducedCase{"qwen3_moe_sparse", DType::kF16, 6e-3}),
    [](const auto& info) {
      return info.param.family + "_" + std::string(DTypeName(info.param.dtype));
    });

// --kv-dtype narrows the KV cache alone: float32 weights with a bfloat16 cache hold half the KV
// bytes, stay within bfloat16's tolerance of the reference, and differ from the float32 cache
// only because of the cache (hook_k / hook_v, computed before it, are bit-identical); cached
// decode reads the narrowed keys, so greedy generation runs on them.
TEST(KvDType, Bfloat16CacheBesideFloat32Weights) {
  const std::string dir = testing::GoldenDir() + "/llama";
  auto ref = SafetensorsFile::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  LoadOptions options;
  options.model_dir = dir, options.devices = "cpu";
  auto wide = Model::Load(options);
  options.kv_dtype = DType::kBF16;
  auto narrow = Model::Load(options);
  ASSERT_TRUE(wide.ok() && narrow.ok()) << wide.status() << narrow.status();
  EXPECT_EQ((*narrow)->dtype(), DType::kF32);
  EXPECT_EQ(2 * (*narrow)->Devices()[0].kv_bytes, (*wide)->Devices()[0].kv_bytes);
  const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find("p1.input_ids"));
  auto a = RunWithCache(**wide, ids, HookSelection::All((*wide)->config()));
  auto b = RunWithCache(**narrow, ids, HookSelection::All((*narrow)->config()));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(AllClose("logits", b->logits.view(),
                       testing::ToF32(*(*ref)->Find("p1.logits")).view(), 6e-2));
  EXPECT_TRUE(AllClose("blocks.0.attn.hook_k", b->cache["blocks.0.attn.hook_k"].view(),
                       a->cache["blocks.0.attn.hook_k"].view(), 0));
  EXPECT_FALSE(AllClose("blocks.0.attn.hook_z", b->cache["blocks.0.attn.hook_z"].view(),
                        a->cache["blocks.0.attn.hook_z"].view(), 0));
  SamplingParams sp;
  sp.max_new_tokens = 6, sp.ignore_eos = true;
  auto gen = Generate(**narrow, ids, sp);
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_EQ(gen->tokens.size(), 6u);
  options.kv_dtype = DType::kI32;
  EXPECT_TRUE(testing::FailsWith(Model::Load(options).status(), absl::StatusCode::kInvalidArgument,
                                 "KV cache must be float32, bfloat16 or float16"));
}

}  // namespace
}  // namespace lensd
