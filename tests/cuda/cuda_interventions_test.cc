// gpu: interventions on CudaBackend against the CPU reference — the row-op kernels on a
// hand-made plan of every kind, the attention kernel's given-scores/pattern inputs, and the
// golden models with interventions on one card and tensor-parallel on one card.
#include <random>

#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "engine/backend/row_ops.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

#define LENSD_REQUIRE_GPU() \
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device"

// Every op kind on rows of a [rows, 300] tensor; segments split and skip elements.
RowOpPlan EveryKind(int rows) {
  RowOpPlan plan;
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0, 1);
  const RowOpKind kinds[] = {RowOpKind::kScale, RowOpKind::kAdd, RowOpKind::kProject,
                             RowOpKind::kSaeClamp, RowOpKind::kNoise, RowOpKind::kSet,
                             RowOpKind::kCopy, RowOpKind::kZero};
  for (int r = 0; r < rows; ++r) {
    for (RowOpKind kind : kinds) {
      if ((r + static_cast<int>(kind)) % 3 == 0) continue;
      RowOp op;
      op.kind = kind, op.row = r, op.a = 0.7f, op.b = 0.1f, op.c = 2.0f, op.seed = 9;
      op.position = r, op.vec = 100;
      op.seg_begin = static_cast<int32_t>(plan.segments.size());
      plan.segments.push_back({int64_t{r} * 300, 120, 0});
      plan.segments.push_back({int64_t{r} * 300 + 150, 180, 150});
      op.seg_end = static_cast<int32_t>(plan.segments.size());
      op.n = 300;
      op.src_seg_begin = static_cast<int32_t>(plan.segments.size());
      plan.segments.push_back({int64_t{(r + 1) % rows} * 300, 300, 0});
      op.src_seg_end = static_cast<int32_t>(plan.segments.size());
      op.value = static_cast<int64_t>(plan.values.size());
      for (int i = 0; i < 300; ++i) plan.values.push_back(d(rng) * 0.1f);
      plan.ops.push_back(op);
    }
  }
  return plan;
}

TEST(CudaInterventions, RowOpKernelsMatchTheHostReference) {
  LENSD_REQUIRE_GPU();
  auto gpu = std::move(MakeCudaBackend(0)).value();
  const int rows = 40;
  std::vector<float> host(rows * 300);
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0, 1);
  for (float& v : host) v = d(rng);
  Buffer x = *gpu->Allocate(DType::kF32, {rows, 300});
  gpu->Upload(host.data(), x.view());
  const RowOpPlan plan = EveryKind(rows);
  ApplyRowOpsHost(host.data(), nullptr, plan);
  gpu->ApplyRowOps(x.view(), {}, plan);
  std::vector<float> got(host.size());
  gpu->Download(x.view(), got.data());
  Buffer want = Buffer::Host(DType::kF32, {rows, 300}), have = Buffer::Host(DType::kF32, {rows, 300});
  std::copy(host.begin(), host.end(), want.As<float>());
  std::copy(got.begin(), got.end(), have.As<float>());
  EXPECT_TRUE(testing::AllClose("row ops", have.view(), want.view(), 1e-5));
}

class GoldenInterventionsOnGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenInterventionsOnGpu, MatchCpuOnOneCardAndTensorParallel) {
  LENSD_REQUIRE_GPU();
  LoadOptions cpu, gpu, tp;
  cpu.model_dir = gpu.model_dir = tp.model_dir = testing::FamilyDir(GetParam());
  gpu.devices = "cuda:0";
  tp.devices = "cuda:0,cuda:0", tp.tensor_parallel = 2;
  auto a = Model::Load(cpu), b = Model::Load(gpu), c = Model::Load(tp);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << b.status() << c.status();
  const ModelConfig& cfg = (*a)->config();
  std::vector<Intervention> list(6);
  list[0].hook = {HookPoint::kZ, 0}, list[0].heads = {1};
  list[1].hook = {HookPoint::kAttnScores, 1}, list[1].op = InterventionOp::kScale;
  list[1].factor = 0.5f, list[1].heads = {0};
  list[2].hook = {HookPoint::kPattern, 0}, list[2].op = InterventionOp::kPatch, list[2].source = 0;
  list[3].hook = {HookPoint::kLn2Scale, 1}, list[3].op = InterventionOp::kScale, list[3].factor = 2;
  list[4].hook = {HookPoint::kResidPost, 0}, list[4].op = InterventionOp::kProject;
  list[4].value = {{cfg.d_model}, std::vector<float>(cfg.d_model, 1.0f)};
  list[5].hook = {HookPoint::kMlpPost, 1}, list[5].op = InterventionOp::kNoise;
  list[5].std = 0.2f, list[5].seed = 4;
  const std::vector<std::vector<int32_t>> prompts = {{3, 14, 15, 92, 65, 35}, {8, 9, 7, 9, 3, 2}};
  auto set = InterventionSet::Create(cfg, list, {6, 6}, false, 6);
  ASSERT_TRUE(set.ok()) << set.status();
  auto ra = RunWithCache(**a, prompts, HookSelection::All(cfg), set->get());
  ASSERT_TRUE(ra.ok()) << ra.status();
  for (auto* m : {&*b, &*c}) {
    auto rb = RunWithCache(**m, prompts, HookSelection::All(cfg), set->get());
    ASSERT_TRUE(rb.ok()) << rb.status();
    for (int p = 0; p < 2; ++p) {
      EXPECT_TRUE(testing::AllClose("logits", (*rb)[p].logits.view(), (*ra)[p].logits.view(), 1e-4));
      for (auto& [name, buf] : (*ra)[p].cache) {
        EXPECT_TRUE(testing::AllClose(name, (*rb)[p].cache[name].view(), buf.view(), 1e-4)) << name;
      }
    }
  }
  // Generation with steering: the same tokens on the GPU.
  Intervention steer;
  steer.hook = {HookPoint::kResidPre, 1}, steer.op = InterventionOp::kAdd, steer.coeff = 3;
  steer.value = {{cfg.d_model}, std::vector<float>(cfg.d_model, 0.5f)};
  auto gen_set = InterventionSet::Create(cfg, {steer}, {6}, true, 16);
  SamplingParams sp;
  sp.max_new_tokens = 10, sp.ignore_eos = true;
  EXPECT_EQ(Generate(**b, prompts[0], sp, nullptr, gen_set->get())->tokens,
            Generate(**a, prompts[0], sp, nullptr, gen_set->get())->tokens);
}

INSTANTIATE_TEST_SUITE_P(Families, GoldenInterventionsOnGpu,
                         ::testing::Values("gpt2", "llama", "qwen2", "gpt_neox", "qwen3",
                                           "gemma2"));

}  // namespace
}  // namespace lensd
