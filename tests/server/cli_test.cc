// The lensd binary against DESIGN.md's command-line contract.
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/safetensors.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

struct CliRun {
  int code;
  std::string out;  // stdout
  std::string err;  // stderr (logs and error messages)
};

CliRun Lensd(const std::string& args) {
  const char* bin = std::getenv("LENSD_BIN");
  const std::string err_path = testing::TempDir("cli_err") + "/stderr";
  std::string cmd = absl::StrCat(bin ? bin : "lensd", " ", args, " 2>", err_path);
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  int status = pclose(p);
  std::ifstream err(err_path);
  std::string err_text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  return {WEXITSTATUS(status), out, err_text};
}

std::string Golden(const std::string& f) { return testing::FamilyDir(f); }

TEST(Cli, GeneratePrintsGreedyIdsLikeTheReference) {
  auto ref = SafetensorsFile::Open(Golden("llama/reference.safetensors"));
  ASSERT_TRUE(ref.ok());
  std::vector<int32_t> prompt = testing::ToIds(*(*ref)->Find("p0.input_ids"));
  std::vector<int32_t> greedy = testing::ToIds(*(*ref)->Find("p0.greedy"));
  CliRun r = Lensd(absl::StrCat("generate --model ", Golden("llama"), " --token-ids=",
                             absl::StrJoin(prompt, ","), " --max-new-tokens 12 --temperature 0"));
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<int32_t> tail(greedy.begin() + prompt.size(), greedy.end());
  EXPECT_NE(r.out.find(absl::StrJoin(tail, " ") + "\n"), std::string::npos) << r.out;
}

TEST(Cli, RunWritesHooksLogitsAndInputIds) {
  const std::string out = testing::TempDir("cli") + "/cache.safetensors";
  CliRun r = Lensd(absl::StrCat("run --model=", Golden("gpt2"), " --token-ids 1,2,3 --hooks ",
                             "'blocks.*.hook_resid_post,hook_pos_embed' --out ", out));
  ASSERT_EQ(r.code, 0) << r.err;
  auto f = SafetensorsFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 3u + 1 + 2);
  EXPECT_EQ((*f)->Find("input_ids")->dtype, DType::kI32);
  EXPECT_EQ((*f)->Find("logits")->shape, (std::vector<int64_t>{1, 3, 1000}));
  EXPECT_EQ((*f)->Find("blocks.2.hook_resid_post")->shape, (std::vector<int64_t>{1, 3, 64}));
}

TEST(Cli, RunGradWritesEachHooksGradientAndTheObjective) {
  const std::string out = testing::TempDir("cli") + "/grad.safetensors";
  CliRun r = Lensd(absl::StrCat("run --model=", Golden("llama"), " --token-ids 1,2,3,4 --hooks ",
                                "'blocks.*.hook_resid_post,hook_embed' --grad logit_diff:5:6 --out ",
                                out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("4 hooks, 4 gradients, the objective"), std::string::npos) << r.out;
  auto f = SafetensorsFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 4u * 2 + 3);
  ASSERT_NE((*f)->Find("blocks.2.hook_resid_post_grad"), nullptr);
  EXPECT_EQ((*f)->Find("blocks.2.hook_resid_post_grad")->shape, (std::vector<int64_t>{1, 4, 64}));
  ASSERT_NE((*f)->Find("objective"), nullptr);
  // The objective is the logit difference the written logits give at the last position.
  const auto* logits = (*f)->Find("logits");
  std::vector<float> l(logits->num_bytes / 4);
  ConvertToF32(logits->dtype, logits->data, l.data(), l.size());
  float objective;
  ConvertToF32(DType::kF32, (*f)->Find("objective")->data, &objective, 1);
  EXPECT_NEAR(objective, l[3 * 1000 + 5] - l[3 * 1000 + 6], 1e-5);
  r = Lensd(absl::StrCat("run --model=", Golden("llama"), " --token-ids 1,2 --grad logprob:1000 ",
                         "--out ", out));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT: objective.logprob.ids[0] = 1000 is outside"),
            std::string::npos) << r.err;
}

TEST(Cli, BuiltinModelWithPromptAndAllHooks) {
  const std::string out = testing::TempDir("cli_builtin") + "/all.safetensors";
  CliRun r = Lensd("run --prompt 'hi there' --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  auto f = SafetensorsFile::Open(out);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->Find("blocks.0.attn.hook_pattern")->shape, (std::vector<int64_t>{1, 4, 9, 9}));
  CliRun g = Lensd("generate --prompt hello --max-new-tokens 5 --temperature 0.8 --seed 3");
  ASSERT_EQ(g.code, 0) << g.err;
  EXPECT_EQ(g.out, Lensd("generate --prompt hello --max-new-tokens 5 --temperature 0.8 --seed 3").out);
}

// --dtype bfloat16 stores the weight matrices in bfloat16 (see golden_test for the hook-by-hook
// tolerance); the cache file keeps float32 tensors, close to the float32 run.
TEST(Cli, RunWithBfloat16Weights) {
  const std::string dir = testing::TempDir("cli_bf16");
  for (const char* dtype : {"float32", "bfloat16"}) {
    CliRun r = Lensd(absl::StrCat("run --model ", Golden("llama"), " --token-ids 5,6,7,8 --dtype ",
                                  dtype, " --out ", dir, "/", dtype, ".safetensors"));
    ASSERT_EQ(r.code, 0) << r.err;
  }
  auto f32 = SafetensorsFile::Open(dir + "/float32.safetensors");
  auto bf16 = SafetensorsFile::Open(dir + "/bfloat16.safetensors");
  ASSERT_TRUE(f32.ok() && bf16.ok());
  const TensorInfo* a = (*f32)->Find("logits");
  const TensorInfo* b = (*bf16)->Find("logits");
  ASSERT_EQ(b->dtype, DType::kF32);
  EXPECT_TRUE(
      testing::AllClose("logits", testing::ToF32(*b).view(), testing::ToF32(*a).view(), 6e-2));
  EXPECT_FALSE(
      testing::AllClose("logits", testing::ToF32(*b).view(), testing::ToF32(*a).view(), 1e-6))
      << "bfloat16 weights gave float32 results";
  CliRun bad = Lensd("run --token-ids 1,2 --dtype int8 --out " + dir + "/x.safetensors");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("INVALID_ARGUMENT"), std::string::npos) << bad.err;
}

TEST(Cli, ErrorsExitNonZeroWithStatusName) {
  CliRun unknown_hook = Lensd("run --token-ids 1,2 --hooks blocks.0.hook_resid_prex --out /tmp/x.st");
  EXPECT_EQ(unknown_hook.code, 1);
  EXPECT_NE(unknown_hook.err.find("INVALID_ARGUMENT"), std::string::npos);
  EXPECT_NE(unknown_hook.err.find("blocks.0.hook_resid_pre"), std::string::npos);
  CliRun bad_id = Lensd("generate --token-ids 1,99999");
  EXPECT_EQ(bad_id.code, 1);
  EXPECT_NE(bad_id.err.find("outside the vocabulary"), std::string::npos);
  EXPECT_EQ(Lensd("generate --prompt x --top-p 2").code, 1);
  EXPECT_EQ(Lensd("generate --bogus 1").code, 1);
  CliRun missing = Lensd("generate --model /nonexistent --token-ids 1");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("/nonexistent"), std::string::npos);
}

}  // namespace
}  // namespace lensd

namespace lensd {
namespace {

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Every instruction-set level of the CPU kernels ($LENSD_CPU_KERNELS caps it) writes the same
// bytes: GEMM, activations and attention give the same bits on each (engine/cpu/gemm.h).
TEST(Cli, EveryKernelLevelWritesTheSameBytes) {
  const std::string dir = testing::TempDir("levels");
  for (const auto& [family, dtype] : {std::pair{"gpt2", "float32"}, {"gpt2", "bfloat16"},
                                      {"llama", "float32"}, {"gpt_neox", "float16"}}) {
    std::string first;
    for (const char* level : {"scalar", "avx2", "avx512"}) {
      const std::string out = absl::StrCat(dir, "/", family, level, dtype, ".safetensors");
      const std::string env = absl::StrCat("LENSD_CPU_KERNELS=", level, " ");
      const char* bin = std::getenv("LENSD_BIN");
      ASSERT_EQ(std::system(absl::StrCat(env, bin ? bin : "lensd", " run --model ", Golden(family),
                                         " --dtype ", dtype, " --token-ids 5,17,200,3,999,41,7,8,12",
                                         " --out ", out, " >/dev/null 2>&1").c_str()),
                0);
      if (first.empty()) {
        first = ReadBytes(out);
        ASSERT_FALSE(first.empty());
      } else {
        EXPECT_EQ(ReadBytes(out), first) << family << " " << level << " " << dtype;
      }
    }
  }
}

}  // namespace
}  // namespace lensd
