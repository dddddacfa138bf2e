// Tensor parallel (thread communicator over virtual CPU devices), alone and composed with the
// pipeline split, and the memory split: single-device hooks and logits within 1e-5 and the
// same greedy ids, for every golden family.
#include "engine/runtime/tensor_parallel.h"

#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

struct ParallelCase {
  std::string family, devices;
  int tp;
  std::string split;
  int offload = 0;
};

class ParallelTest : public ::testing::TestWithParam<ParallelCase> {};

TEST_P(ParallelTest, MatchesSingleDevice) {
  const ParallelCase& pc = GetParam();
  LoadOptions one, many;
  one.model_dir = many.model_dir = pc.family == "builtin" ? "" : testing::FamilyDir(pc.family);
  many.devices = pc.devices;
  many.tensor_parallel = pc.tp;
  many.split = pc.split;
  many.offload_layers = pc.offload;
  auto a = Model::Load(one), b = Model::Load(many);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const ModelConfig& c = (*a)->config();
  const std::vector<int32_t> ids = {11, 22, 33, 44, 55, 66, 77};
  auto ra = RunWithCache(**a, ids, HookSelection::All(c));
  auto rb = RunWithCache(**b, ids, HookSelection::All(c));
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_TRUE(testing::AllClose("logits", rb->logits.view(), ra->logits.view(), 1e-5));
  ASSERT_EQ(ra->cache.size(), rb->cache.size());
  for (auto& [name, buf] : ra->cache) {
    ASSERT_EQ(rb->cache[name].shape(), buf.shape()) << name;
    EXPECT_TRUE(testing::AllClose(name, rb->cache[name].view(), buf.view(), 1e-5)) << name;
  }
  SamplingParams p;
  p.max_new_tokens = 10;
  p.ignore_eos = true;
  EXPECT_EQ(Generate(**a, ids, p)->tokens, Generate(**b, ids, p)->tokens);
  // Two runs of the parallel model agree bit for bit (the collectives are deterministic).
  auto again = RunWithCache(**b, ids, HookSelection::All(c));
  EXPECT_TRUE(testing::AllClose("rerun", again->logits.view(), rb->logits.view(), 0));
}

INSTANTIATE_TEST_SUITE_P(
    Parallel, ParallelTest,
    ::testing::Values(
        ParallelCase{"gpt2", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"gpt2", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},
        ParallelCase{"llama", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"llama", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},  // KV heads replicated
        ParallelCase{"qwen2", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"qwen2", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},
        ParallelCase{"gpt_neox", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"gpt_neox", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},
        ParallelCase{"qwen3", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"qwen3", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},
        ParallelCase{"gemma2", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"gemma2", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},
        // OLMo 2's whole-projection q/k norm runs on the gathered projection; 4 ranks
        // replicate its 2 key/value heads.
        ParallelCase{"olmo2", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"olmo2", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},
        ParallelCase{"gemma3_text", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"gemma3_text", "cpu:0,cpu:1,cpu:2,cpu:3", 4, "", 2},
        ParallelCase{"phi3", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"phi3", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},
        ParallelCase{"phi3_longrope", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"mixtral", "cpu:0,cpu:1", 2, ""},
        ParallelCase{"mixtral", "cpu:0,cpu:1,cpu:2,cpu:3", 4, ""},    // one expert per rank
        ParallelCase{"qwen3_moe", "cpu:0,cpu:1,cpu:2,cpu:3", 2, ""},  // with pipeline stages
        ParallelCase{"qwen3_moe_sparse", "cpu:0,cpu:1", 2, ""},
        // Pipeline x tensor parallel: 2 stages of 2 ranks.
        ParallelCase{"gpt2", "cpu:0,cpu:1,cpu:2,cpu:3", 2, ""},
        ParallelCase{"llama", "cpu:0,cpu:1,cpu:2,cpu:3", 2, "0-0,1-2"},
        ParallelCase{"qwen2", "cpu:0,cpu:1,cpu:2,cpu:3", 2, "memory"},
        ParallelCase{"gpt_neox", "cpu:3,cpu:2,cpu:1,cpu:0", 2, ""},
        // Pipeline alone over 2, 3, 4 devices with the memory split.
        ParallelCase{"gpt2", "cpu:0,cpu:1", 1, "memory"},
        ParallelCase{"llama", "cpu:0,cpu:1,cpu:2", 1, "memory"},
        ParallelCase{"builtin", "cpu:0,cpu:1,cpu:2,cpu:3", 1, "memory"},
        ParallelCase{"builtin", "cpu:0,cpu:1,cpu:2,cpu:3", 1, ""},
        ParallelCase{"builtin", "cpu:0,cpu:1,cpu:2,cpu:3", 2, "memory"},
        // CPU offload: the last layers stream from host memory (1, 2 and every layer).
        ParallelCase{"gpt2", "cpu", 1, "", 1}, ParallelCase{"llama", "cpu", 1, "", 3},
        ParallelCase{"qwen2", "cpu:0,cpu:1", 1, "", 1},
        ParallelCase{"gpt_neox", "cpu:0,cpu:1", 2, "", 2}, ParallelCase{"builtin", "cpu", 1, "", 3},
        ParallelCase{"builtin", "cpu:0,cpu:1", 1, "", 4}));

TEST(TensorParallel, RejectsIndivisibleShapes) {
  ModelConfig c = BuiltinConfig();  // 4 heads, 2 KV heads, d_mlp 344
  EXPECT_TRUE(CheckTensorParallel(c, 2).ok());
  EXPECT_FALSE(CheckTensorParallel(c, 3).ok());
  EXPECT_EQ(KvHeadsPerRank(c, 4), 1);
  EXPECT_EQ(KvReplication(c, 4), 2);
  LoadOptions o;
  o.devices = "cpu:0,cpu:1,cpu:2";
  o.tensor_parallel = 2;
  EXPECT_EQ(Model::Load(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// A mixture of experts splits by whole experts: the rank count must divide them. Centring the
// stacked experts' writing weights (LayerNorm mixtures only; none exists) is refused.
TEST(TensorParallel, MixtureOfExpertsNeedsWholeExpertsPerRank) {
  auto config = LoadModelConfig(testing::FamilyDir("mixtral") + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(CheckTensorParallel(*config, 4).ok());  // 4 experts
  for (LayerSpec& l : config->layers) l.moe.experts = 6;
  EXPECT_TRUE(testing::FailsWith(CheckTensorParallel(*config, 4),
                                 absl::StatusCode::kInvalidArgument,
                                 "--tensor-parallel 4 must divide the 6 experts"));
  for (LayerSpec& l : config->layers) l.moe.experts = 4;
  config->norm = NormKind::kLayerNorm;
  LoadOptions o;
  o.processing = *ParseProcessing("transformer-lens");
  EXPECT_TRUE(testing::FailsWith(Model::FromSource(*MakeRandomSource(*config, 1), o).status(),
                                 absl::StatusCode::kUnimplemented,
                                 "center_writing_weights of a LayerNorm mixture of experts"));
}

TEST(MemorySplit, BalancesByCapacity) {
  ModelConfig c = BuiltinConfig();
  c.n_layers = 12;
  SetUniformLayers(c, c.layers[0]);
  c.vocab_size = 8;  // negligible embeddings: layers alone decide
  const int64_t G = int64_t{1} << 30;
  auto even = PlanMemorySplit(c, 0, {G, G, G});
  ASSERT_TRUE(even.ok());
  EXPECT_EQ(*even, (std::vector<std::pair<int, int>>{{0, 4}, {4, 8}, {8, 12}}));
  auto skewed = PlanMemorySplit(c, 0, {G, 3 * G});  // a card with 3x the free memory
  ASSERT_TRUE(skewed.ok());
  EXPECT_EQ(*skewed, (std::vector<std::pair<int, int>>{{0, 3}, {3, 12}}));
  c.vocab_size = 50000;  // large embedding and unembedding push layers to the middle device
  auto embed = PlanMemorySplit(c, 0, {G, G, G});
  ASSERT_TRUE(embed.ok());
  EXPECT_LT((*embed)[0].second - (*embed)[0].first, 4);
  EXPECT_GT((*embed)[1].second - (*embed)[1].first, 4);
  EXPECT_EQ(PlanMemorySplit(c, 0, {int64_t{1} << 20, int64_t{1} << 20}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(PlanMemorySplit(c, 0, std::vector<int64_t>(13, G)).ok());
  // KV budget counts: 1 GiB of KV per layer does not fit 12 layers on two 4 GiB devices.
  EXPECT_EQ(PlanMemorySplit(c, G, {4 * G, 4 * G}).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Offloaded layers cost only KV plus two streaming slots.
  c.vocab_size = 8;
  const int64_t layer = 4 * (2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 344 + 4 * 128);
  EXPECT_FALSE(PlanMemorySplit(c, 0, {5 * layer, 5 * layer}).ok());
  auto offloaded = PlanMemorySplit(c, 0, {5 * layer, 5 * layer}, 8);
  ASSERT_TRUE(offloaded.ok()) << offloaded.status();
}

TEST(MemorySplit, AutomaticOffloadWhenWeightsDoNotFit) {
  LoadOptions one, small;
  small.split = "memory";
  small.kv_tokens = 64;
  small.device_memory = {int64_t{5} << 19};  // 2.5 MiB for 3 MiB of weights
  auto a = Model::Load(one), b = Model::Load(small);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  int offloaded = 0;
  for (const DeviceLayout& d : (*b)->Devices()) offloaded += d.offloaded_layers;
  EXPECT_GT(offloaded, 0);
  SamplingParams p;
  p.max_new_tokens = 12;
  p.ignore_eos = true;
  EXPECT_EQ(Generate(**a, {1, 70, 80}, p)->tokens, Generate(**b, {1, 70, 80}, p)->tokens);
  small.device_memory = {int64_t{1} << 10};  // not even the embeddings
  EXPECT_EQ(Model::Load(small).status().code(), absl::StatusCode::kResourceExhausted);
}

// --kv-tokens 0: the KV cache takes what each stage's budget leaves after its weights.
TEST(KvBudget, SizedFromWhatTheWeightsLeave) {
  const ModelConfig c = BuiltinConfig();
  LoadOptions o;
  auto f32 = Model::Load(o);
  o.dtype = DType::kBF16;
  auto bf16 = Model::Load(o);
  ASSERT_TRUE(f32.ok() && bf16.ok());
  // The estimate the budget uses is the loaded weights, up to the uncounted small vectors.
  const std::pair<int, int> all{0, c.n_layers};
  for (auto [m, dtype] : {std::pair{f32->get(), DType::kF32}, {bf16->get(), DType::kBF16}}) {
    const double est = StageWeightBytes(c, dtype, 1, all, c.n_layers, true, true);
    EXPECT_NEAR(est, double(m->Devices()[0].weight_bytes), 0.02 * est) << DTypeName(dtype);
  }
  const int64_t weights = StageWeightBytes(c, DType::kF32, 1, all, c.n_layers, true, true);
  const int64_t per_token = 2 * int64_t{c.n_kv_heads} * c.d_head * 4 * c.n_layers;
  auto fit = KvTokensForBudget(c, DType::kF32, 1, {all}, {weights + 1000 * per_token + 5}, 0, 16);
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_EQ(*fit, 992);  // 1000 tokens of room, whole blocks of 16
  // bfloat16 weights leave more room in the same budget.
  EXPECT_GT(*KvTokensForBudget(c, DType::kBF16, 1, {all}, {weights + 1000 * per_token}, 0, 16),
            1000);
  // The tightest stage decides; a stage without room for one block is an error.
  auto two = KvTokensForBudget(
      c, DType::kF32, 1, {{0, 2}, {2, 4}},
      {weights, StageWeightBytes(c, DType::kF32, 1, {2, 4}, 4, false, true) + (per_token / 2) * 64},
      0, 16);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(*two, 64);
  EXPECT_EQ(KvTokensForBudget(c, DType::kF32, 1, {all}, {weights}, 0, 16).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(KvTokensForBudget(c, DType::kF32, 1, {all}, {weights, weights}, 0, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Loading with kv_tokens 0 on a budgeted virtual device: pools sized to the budget.
TEST(KvBudget, LoadSizesPoolsToTheBudget) {
  const ModelConfig c = BuiltinConfig();
  const std::pair<int, int> all{0, c.n_layers};
  const int64_t weights = StageWeightBytes(c, DType::kF32, 1, all, c.n_layers, true, true);
  const int64_t per_token = 2 * int64_t{c.n_kv_heads} * c.d_head * 4 * c.n_layers;
  LoadOptions budgeted;
  budgeted.kv_tokens = 0;
  budgeted.device_memory = {weights + 300 * per_token};
  auto m = Model::Load(budgeted);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->blocks().num_blocks() * (*m)->blocks().block_size(), 288);
  EXPECT_LE((*m)->Devices()[0].kv_bytes + (*m)->Devices()[0].weight_bytes,
            budgeted.device_memory[0]);
  budgeted.gpu_memory_fraction = 1.5;
  EXPECT_EQ(Model::Load(budgeted).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lensd
