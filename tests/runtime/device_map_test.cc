// Virtual CPU devices: every split gives exactly the single-device hooks, logits and greedy ids.
#include <cstring>
#include <map>

#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

TEST(DeviceMap, TransformerLensSplitFormula) {
  auto r = PlanSplit("", 5, 2);  // floor(i*2/5): 0,0,0,1,1
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (std::vector<std::pair<int, int>>{{0, 3}, {3, 5}}));
  auto e = PlanSplit("0-0,1-4", 5, 2);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ((*e)[0], (std::pair<int, int>{0, 1}));
  EXPECT_FALSE(PlanSplit("0-1,3-4", 5, 2).ok());
  EXPECT_FALSE(PlanSplit("0-4", 5, 2).ok());
  EXPECT_FALSE(PlanSplit("", 2, 3).ok());
}

struct SplitCase {
  std::string family, devices, split;
};
class SplitTest : public ::testing::TestWithParam<SplitCase> {};

TEST_P(SplitTest, EqualsSingleDevice) {
  const SplitCase& sc = GetParam();
  LoadOptions one, many;
  one.model_dir = many.model_dir = testing::FamilyDir(sc.family);
  many.devices = sc.devices;
  many.split = sc.split;
  auto a = Model::Load(one), b = Model::Load(many);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_GT((*b)->Devices().size(), 1u);
  const std::vector<int32_t> ids = {11, 22, 33, 44, 55, 66};
  auto ra = RunWithCache(**a, ids, HookSelection::All((*a)->config()));
  auto rb = RunWithCache(**b, ids, HookSelection::All((*b)->config()));
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(0, std::memcmp(ra->logits.As<float>(), rb->logits.As<float>(), ra->logits.NumBytes()));
  ASSERT_EQ(ra->cache.size(), rb->cache.size());
  for (auto& [name, buf] : ra->cache) {
    EXPECT_TRUE(testing::AllClose(name, rb->cache[name].view(), buf.view(), 0)) << name;
  }
  SamplingParams p;
  p.max_new_tokens = 8;
  p.ignore_eos = true;
  EXPECT_EQ(Generate(**a, ids, p)->tokens, Generate(**b, ids, p)->tokens);
}

INSTANTIATE_TEST_SUITE_P(
    Splits, SplitTest,
    ::testing::Values(
        SplitCase{"gpt2", "cpu:0,cpu:1", ""}, SplitCase{"gpt2", "cpu:0,cpu:1,cpu:2", ""},
        SplitCase{"llama", "cpu:0,cpu:1", "0-0,1-2"},
        SplitCase{"llama", "cpu:0,cpu:1,cpu:2", "transformer-lens"},
        SplitCase{"qwen2", "cpu:0,cpu:1", ""}, SplitCase{"gpt_neox", "cpu:1,cpu:0", ""},
        SplitCase{"qwen3", "cpu:0,cpu:1", ""}, SplitCase{"olmo2", "cpu:0,cpu:1,cpu:2", ""},
        SplitCase{"gemma2", "cpu:0,cpu:1", "0-2,3-3"},
        SplitCase{"gemma3_text", "cpu:0,cpu:1,cpu:2", ""}, SplitCase{"phi3", "cpu:0,cpu:1", ""},
        SplitCase{"phi3_longrope", "cpu:0,cpu:1", ""}, SplitCase{"mixtral", "cpu:0,cpu:1", ""},
        SplitCase{"qwen3_moe", "cpu:0,cpu:1,cpu:2", ""},
        SplitCase{"qwen3_moe_sparse", "cpu:0,cpu:1", ""}));

TEST(DeviceMap, BadDeviceSpecsAreErrors) {
  LoadOptions o;
  o.devices = "tpu:0";
  EXPECT_EQ(Model::Load(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.devices = "cpu:0,cpu:0";
  EXPECT_FALSE(Model::Load(o).ok());
}

}  // namespace
}  // namespace lensd

namespace lensd {
namespace {

// A batch on a pipeline runs as micro-batches overlapped across stage threads; every
// sequence's hooks and logits must equal the single-device batch bit for bit.
TEST(Pipeline, OverlappedMicroBatchesEqualSingleDevice) {
  for (const std::string devices : {"cpu:0,cpu:1", "cpu:0,cpu:1,cpu:2"}) {
    LoadOptions one, many;
    one.model_dir = many.model_dir = testing::GoldenDir() + "/gpt2";
    many.devices = devices;
    auto a = Model::Load(one), b = Model::Load(many);
    ASSERT_TRUE(a.ok() && b.ok());
    const ModelConfig& c = (*a)->config();
    const std::vector<std::vector<int32_t>> seqs = {{1, 2, 3, 4, 5}, {9, 8}, {100, 200, 300}, {7}};
    std::vector<int> lengths;
    for (const auto& s : seqs) lengths.push_back(static_cast<int>(s.size()));
    std::map<std::string, std::vector<Buffer>> caches;
    std::vector<Buffer> logits;
    for (Model* m : {a->get(), b->get()}) {
      std::vector<std::vector<int32_t>> tables(seqs.size());
      std::vector<SeqInput> batch;
      for (size_t i = 0; i < seqs.size(); ++i) {
        ASSERT_TRUE(m->blocks().Reserve(tables[i], lengths[i]));
        batch.push_back({seqs[i], 0, &tables[i], i % 2 == 0});
      }
      CacheCollector sink(HookSelection::All(c), static_cast<int>(lengths.size()));
      auto r = m->Forward(batch, &sink);
      ASSERT_TRUE(r.ok());
      logits.push_back(std::move(r->logits));
      for (size_t i = 0; i < seqs.size(); ++i) {
        for (auto& [name, buf] : sink.cache(static_cast<int>(i))) {
          caches[name + "/" + std::to_string(i)].push_back(std::move(buf));
        }
        m->blocks().Release(tables[i]);
      }
    }
    EXPECT_TRUE(testing::AllClose(devices + " logits", logits[1].view(), logits[0].view(), 0));
    for (auto& [key, pair] : caches) {
      ASSERT_EQ(pair.size(), 2u) << key;
      EXPECT_TRUE(testing::AllClose(devices + " " + key, pair[1].view(), pair[0].view(), 0));
    }
  }
}

}  // namespace
}  // namespace lensd
