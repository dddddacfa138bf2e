// gpu: every CudaBackend op against CpuBackend on random inputs at several shapes, and the
// golden models end to end on cuda:0 (float32, TF32 off) at the CPU golden tolerance.
// Everything skips without a CUDA device.
#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/cuda/op_test.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

TEST_F(OpTest, LinearWithAndWithoutBias) {
  for (auto [t, n, k] : {std::tuple{1, 64, 64}, {5, 100, 37}, {16, 768, 768}, {33, 3072, 768},
                         {70, 50257 / 7, 128}}) {
    auto x = Random({t, k}), w = RandomMatrix({n, k}, 0.05f), b = Random({n});
    auto y = Zeros({t, n}), yb = Zeros({t, n});
    cpu_->Linear(x.first.view(), w.first.view(), {}, y.first.view());
    gpu_->Linear(x.second.view(), w.second.view(), {}, y.second.view());
    cpu_->Linear(x.first.view(), w.first.view(), b.first.view(), yb.first.view());
    gpu_->Linear(x.second.view(), w.second.view(), b.second.view(), yb.second.view());
    EXPECT_TRUE(Same("linear", y, 1e-4));
    EXPECT_TRUE(Same("linear+bias", yb, 1e-4));
  }
}

// The mixture-of-experts and Gemma ops: one expert's rows of stacked matrices (each backend's
// own matrix layout) through Linear, weighted row adds into the output, scale and softcap.
TEST_F(OpTest, ExpertRowsScaledRowAddsAndSoftcap) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    auto x = Random({5, 64}), w = RandomMatrix({4 * 48, 64}, 0.1f, dtype), y = Zeros({5, 48});
    cpu_->Linear(x.first.view(), cpu_->MatrixRows(w.first.view(), 2 * 48, 48), {}, y.first.view());
    gpu_->Linear(x.second.view(), gpu_->MatrixRows(w.second.view(), 2 * 48, 48), {},
                 y.second.view());
    EXPECT_TRUE(Same("expert 2 of 4", y, 1e-4));
  }
  auto src = Random({3, 64}), dst = Random({5, 64});
  const std::vector<int32_t> rows = {4, 0, 2};
  const std::vector<float> scales = {0.5f, -1.0f, 2.0f};
  cpu_->AddRowsScaled(src.first.view(), rows.data(), scales.data(), dst.first.view());
  gpu_->AddRowsScaled(src.second.view(), rows.data(), scales.data(), dst.second.view());
  EXPECT_TRUE(Same("scaled row adds", dst, 1e-6));
  auto v = Random({7, 100}, 20.0f);
  cpu_->ScaleAndCap(v.first.view(), 8.0f, 30.0f);
  gpu_->ScaleAndCap(v.second.view(), 8.0f, 30.0f);
  EXPECT_TRUE(Same("scale and softcap", v, 1e-6));
}

// Each capture must see the tensor as it was when CaptureAsync was called, although compute
// overwrites it at once; deliveries come in order, and a tensor larger than the capture ring
// (here 320 MiB) takes the synchronous path after the earlier ones.
TEST_F(OpTest, CaptureAsyncSnapshotsInOrder) {
  auto x = Random({1024, 256}), one = Random({1024, 256});
  std::vector<int> order;
  for (int i = 0; i < 300; ++i) {  // 300 MiB through the ring
    Buffer expect = Buffer::Host(DType::kF32, x.first.shape());
    std::memcpy(expect.As<void>(), x.first.As<void>(), expect.NumBytes());
    gpu_->CaptureAsync(
        x.second.view(),
        [&order, i, e = std::make_shared<Buffer>(std::move(expect))](TensorView host) {
          EXPECT_TRUE(testing::AllClose("capture", host, e->view(), 0));
          order.push_back(i);
        });
    cpu_->Add(x.first.view(), one.first.view(), x.first.view());
    gpu_->Add(x.second.view(), one.second.view(), x.second.view());
  }
  auto big = Random({80, 1024, 1024});
  gpu_->CaptureAsync(big.second.view(), [&](TensorView host) {
    EXPECT_TRUE(testing::AllClose("big capture", host, big.first.view(), 0));
    order.push_back(-1);
  });
  gpu_->FlushCaptures();
  ASSERT_EQ(order.size(), 301u);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(order[i], i);
  EXPECT_EQ(order.back(), -1);
}

TEST_F(OpTest, GatherNormActivationsAdd) {
  auto table = Random({300, 96});
  std::vector<int32_t> ids = {0, 299, 5, 5, 17};
  auto g = Zeros({5, 96});
  cpu_->Gather(table.first.view(), ids.data(), g.first.view());
  gpu_->Gather(table.second.view(), ids.data(), g.second.view());
  EXPECT_TRUE(Same("gather", g, 0));
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
    auto x = Random({9, 96}), w = Random({96}), b = Random({96});
    auto y = Zeros({9, 96}), n = Zeros({9, 96}), s = Zeros({9});
    cpu_->Norm(kind, x.first.view(), w.first.view(), b.first.view(), 1e-5f, y.first.view(),
               n.first.view(), s.first.view());
    gpu_->Norm(kind, x.second.view(), w.second.view(), b.second.view(), 1e-5f, y.second.view(),
               n.second.view(), s.second.view());
    EXPECT_TRUE(Same("norm y", y) && Same("norm normalized", n) && Same("norm scale", s));
  }
  for (ActKind act : {ActKind::kGeluTanh, ActKind::kGeluErf, ActKind::kSilu, ActKind::kRelu}) {
    auto x = Random({7, 130}, 3.0f), up = Random({7, 130});
    auto y = Zeros({7, 130}), gated = Zeros({7, 130});
    cpu_->Activation(act, x.first.view(), y.first.view());
    gpu_->Activation(act, x.second.view(), y.second.view());
    cpu_->GatedActivation(act, x.first.view(), up.first.view(), gated.first.view());
    gpu_->GatedActivation(act, x.second.view(), up.second.view(), gated.second.view());
    EXPECT_TRUE(Same("activation", y) && Same("gated", gated));
  }
  auto a = Random({1000}), b = Random({1000});
  cpu_->Add(a.first.view(), b.first.view(), a.first.view());
  gpu_->Add(a.second.view(), b.second.view(), a.second.view());
  EXPECT_TRUE(Same("add", a, 0));
}

TEST_F(OpTest, RopeIncludingPartialRotary) {
  std::vector<float> inv(16);
  for (int i = 0; i < 16; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / 32);
  auto freq = Zeros({16});
  cpu_->Upload(inv.data(), freq.first.view());
  gpu_->Upload(inv.data(), freq.second.view());
  std::vector<int32_t> pos = {0, 1, 7, 4095, 131071};
  for (int dh : {32, 64}) {  // rotary_dim 32: full, then 50% partial
    auto x = Random({5, 3, dh});
    cpu_->Rope(x.first.view(), freq.first.view(), 32, pos.data(), 1.25f);
    gpu_->Rope(x.second.view(), freq.second.view(), 32, pos.data(), 1.25f);
    EXPECT_TRUE(Same("rope", x, 1e-5));
  }
}

// Device memory running out inside a step fails that step only (Backend::TakeError): the
// allocation returns RESOURCE_EXHAUSTED, later ops of the step are skipped, and once the
// error is taken the backend computes as before.
TEST_F(OpTest, OutOfMemoryFailsTheStepOnly) {
  auto x = Random({4, 64}), y = Zeros({4, 64});
  auto w = RandomMatrix({64, 64}, 0.1f);
  ASSERT_TRUE(gpu_->TakeError().ok());
  absl::StatusOr<Buffer> huge = gpu_->Allocate(DType::kF32, {int64_t{1} << 40});  // 4 TiB
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  gpu_->Linear(x.second.view(), w.second.view(), {}, y.second.view());  // skipped
  gpu_->Synchronize();
  const absl::Status taken = gpu_->TakeError();
  EXPECT_EQ(taken.code(), absl::StatusCode::kResourceExhausted) << taken;
  EXPECT_TRUE(Same("skipped op left y alone", y, 0));
  cpu_->Linear(x.first.view(), w.first.view(), {}, y.first.view());
  gpu_->Linear(x.second.view(), w.second.view(), {}, y.second.view());
  EXPECT_TRUE(Same("linear after the failure", y, 1e-5));
  EXPECT_TRUE(gpu_->TakeError().ok());
}

// bfloat16 / float16 weights: both backends round the GEMM inputs to the weights' dtype and
// accumulate in float32, so they agree to float32 accumulation-order differences.
TEST_F(OpTest, NarrowWeightsLinearAndGather) {
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (auto [t, n, k] : {std::tuple{1, 64, 64}, {5, 100, 37}, {33, 3072, 768}}) {
      std::vector<float> host(size_t(n) * k);
      std::normal_distribution<float> dist(0.0f, 0.05f);
      for (float& v : host) v = dist(rng_);
      Buffer wc = *cpu_->Allocate(dtype, {n, k}), wg = *gpu_->Allocate(dtype, {n, k});
      cpu_->Upload(host.data(), wc.view());  // an embedding table, for Gather
      gpu_->Upload(host.data(), wg.view());
      Buffer mc = *cpu_->AllocateMatrix(dtype, {n, k}), mg = *gpu_->AllocateMatrix(dtype, {n, k});
      cpu_->UploadMatrix(host.data(), mc.view());
      gpu_->UploadMatrix(host.data(), mg.view());
      auto x = Random({t, k}), b = Random({n}), y = Zeros({t, n});
      cpu_->Linear(x.first.view(), mc.view(), b.first.view(), y.first.view());
      gpu_->Linear(x.second.view(), mg.view(), b.second.view(), y.second.view());
      EXPECT_TRUE(Same(std::string("linear ") + std::string(DTypeName(dtype)), y, 1e-4));
      auto rows = Zeros({3, k});
      const int32_t ids[] = {n - 1, 0, 7};
      cpu_->Gather(wc.view(), ids, rows.first.view());
      gpu_->Gather(wg.view(), ids, rows.second.view());
      EXPECT_TRUE(Same("gather", rows, 0));
    }
  }
}

// The scheduler's batch invariance on the GPU: a row gives the same bits alone, in a small
// batch and in a call of more than Gemm::kMaxRows rows (one fixed algorithm per shape), with
// the bias epilogue, up to a vocabulary-sized head.
TEST_F(OpTest, LinearRowsDoNotDependOnTheirBatch) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (auto [n, k] : {std::pair{2048, 2048}, {512, 2048}, {8192, 2048}, {3072, 768},
                        {128256, 2048}}) {  // the last: Llama-3's vocabulary (the head)
      std::vector<float> host(size_t(n) * k);
      std::normal_distribution<float> dist(0.0f, 0.05f);
      for (float& v : host) v = dist(rng_);
      Buffer w = *gpu_->AllocateMatrix(dtype, {n, k});
      gpu_->UploadMatrix(host.data(), w.view());
      auto x = Random({300, k});
      auto bias = Random({n});  // the bias epilogue must not change the chains either
      Buffer all = *gpu_->Allocate(DType::kF32, {300, n});
      gpu_->Linear(x.second.view(), w.view(), bias.second.view(), all.view());
      std::vector<float> want(size_t(300) * n), got(size_t(8) * n);
      gpu_->Download(all.view(), want.data());
      for (int first : {0, 7, 255, 292}) {
        for (int rows : {1, 8}) {
          Buffer part = *gpu_->Allocate(DType::kF32, {rows, n});
          gpu_->Linear(x.second.view().Rows(first, first + rows), w.view(), bias.second.view(),
                       part.view());
          gpu_->Download(part.view(), got.data());
          EXPECT_EQ(0, std::memcmp(got.data(), want.data() + int64_t(first) * n,
                                   sizeof(float) * rows * n))
              << DTypeName(dtype) << " N=" << n << " K=" << k << " rows " << first << "+" << rows;
        }
      }
    }
  }
}

class GoldenOnGpu : public ::testing::TestWithParam<std::string> {};

// Narrow weights on the GPU: every hook within the CPU test's stated tolerance of the float32
// reference (bfloat16 6e-2, float16 6e-3 × max(1, max|ref|)), and cached decode picks the
// tokens that full recomputation picks.
TEST_P(GoldenOnGpu, NarrowWeightsCloseToReferenceAndCachedDecodeEqualsRecompute) {
  LENSD_REQUIRE_GPU();
  const std::string dir = testing::FamilyDir(GetParam());
  auto ref = SafetensorsFile::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  // Gemma 2's post-norms double the bounds (as ReducedPrecisionTest's on the CPU).
  const double widen = GetParam() == std::string("gemma2") ? 2.0 : 1.0;
  for (auto [dtype, tol] : {std::pair{DType::kBF16, 6e-2 * widen}, {DType::kF16, 6e-3 * widen}}) {
    LoadOptions o;
    o.model_dir = dir, o.devices = "cuda:0", o.dtype = dtype;
    auto m = Model::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    const std::vector<int32_t> ids = testing::ToIds(*(*ref)->Find("p0.input_ids"));
    auto r = RunWithCache(**m, ids, HookSelection::All((*m)->config()));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(testing::AllClose("logits", r->logits.view(),
                                  testing::ToF32(*(*ref)->Find("p0.logits")).view(), tol));
    for (const auto& [name, got] : r->cache) {
      EXPECT_TRUE(testing::AllClose(name, got.view(),
                                    testing::ToF32(*(*ref)->Find("p0." + name)).view(), tol));
    }
    SamplingParams p;
    p.max_new_tokens = 6;
    p.ignore_eos = true;
    std::vector<int32_t> seq = ids;
    const int V = (*m)->config().vocab_size;
    for (int i = 0; i < p.max_new_tokens; ++i) {
      auto full = RunWithCache(**m, seq, HookSelection::None((*m)->config()));
      ASSERT_TRUE(full.ok());
      const float* last = full->logits.As<float>() + int64_t(seq.size() - 1) * V;
      seq.push_back(static_cast<int32_t>(std::max_element(last, last + V) - last));
    }
    std::vector<int32_t> cached = ids;
    const auto gen = Generate(**m, ids, p)->tokens;
    cached.insert(cached.end(), gen.begin(), gen.end());
    EXPECT_EQ(cached, seq) << DTypeName(dtype);
  }
}

TEST_P(GoldenOnGpu, MatchesCpuAndCachedDecodeEqualsRecompute) {
  LENSD_REQUIRE_GPU();
  LoadOptions cpu, gpu, two, tp;
  cpu.model_dir = gpu.model_dir = two.model_dir = tp.model_dir = testing::FamilyDir(GetParam());
  gpu.devices = "cuda:0";
  two.devices = "cuda:0,cuda:0";  // two logical pipeline shards on one card (peer copy)
  tp.devices = "cuda:0,cuda:0";   // tensor parallel 2 on one card (thread communicator)
  tp.tensor_parallel = 2;
  auto a = Model::Load(cpu), b = Model::Load(gpu), c = Model::Load(two), d = Model::Load(tp);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok()) << b.status() << c.status() << d.status();
  const std::vector<int32_t> ids = {3, 14, 15, 92, 65, 35, 89, 79};
  const ModelConfig& cfg = (*a)->config();
  auto ra = RunWithCache(**a, ids, HookSelection::All(cfg));
  for (auto* m : {&*b, &*c, &*d}) {
    auto rb = RunWithCache(**m, ids, HookSelection::All(cfg));
    ASSERT_TRUE(ra.ok() && rb.ok());
    EXPECT_TRUE(testing::AllClose("logits", rb->logits.view(), ra->logits.view(), 1e-4));
    for (auto& [name, buf] : ra->cache) {
      EXPECT_TRUE(testing::AllClose(name, rb->cache[name].view(), buf.view(), 1e-4)) << name;
    }
  }
  SamplingParams p;
  p.max_new_tokens = 12;
  p.ignore_eos = true;
  const auto greedy = Generate(**a, ids, p)->tokens;
  EXPECT_EQ(Generate(**b, ids, p)->tokens, greedy);  // cached decode on the GPU
  EXPECT_EQ(Generate(**c, ids, p)->tokens, greedy);
  EXPECT_EQ(Generate(**d, ids, p)->tokens, greedy);
}

// Logits of a prefill of three prompts, 12 decode steps of the three together (their block
// tables cross widths 2, 4 and 8 with 4-token blocks, so new graphs are captured), then 3
// steps of the first alone; each step feeds the argmax back.
std::vector<float> DecodeTrace(Model& m) {
  const int V = m.config().vocab_size;
  std::vector<std::vector<int32_t>> tables(3);
  std::vector<SeqInput> batch = {{{3, 14, 15}, 0, &tables[0], false},
                                 {{92, 65, 35, 89, 79}, 0, &tables[1], false},
                                 {{7}, 0, &tables[2], false}};
  for (auto& t : tables) EXPECT_TRUE(m.blocks().Reserve(t, 40));
  std::vector<float> trace;
  for (int step = 0; step < 16; ++step) {
    if (step == 13) batch.resize(1);
    auto r = m.Forward(batch, nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    trace.insert(trace.end(), r->logits.As<float>(), r->logits.As<float>() + batch.size() * V);
    for (size_t s = 0; s < batch.size(); ++s) {
      const float* row = r->logits.As<float>() + int64_t(r->first_row[s]) * V;
      batch[s].start_pos += static_cast<int>(batch[s].tokens.size());
      batch[s].tokens = {static_cast<int32_t>(std::max_element(row, row + V) - row)};
    }
  }
  for (auto& t : tables) m.blocks().Release(t);
  return trace;
}

// Decode steps replayed as CUDA graphs compute exactly what normal steps compute.
TEST_P(GoldenOnGpu, CudaGraphDecodeEqualsNormalDecode) {
  LENSD_REQUIRE_GPU();
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    LoadOptions plain;
    plain.model_dir = testing::FamilyDir(GetParam());
    plain.devices = "cuda:0";
    plain.block_size = 4;
    plain.kv_tokens = 1024;
    plain.dtype = dtype;
    LoadOptions graphs = plain;
    graphs.cuda_graphs = true;
    auto a = Model::Load(plain), b = Model::Load(graphs);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    const std::vector<float> want = DecodeTrace(**a), got = DecodeTrace(**b);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
        << DTypeName(dtype);
    // Replays reuse the graphs: a second run gives the same bits again.
    EXPECT_EQ(DecodeTrace(**b), want) << DTypeName(dtype);
  }
}

// Logits of one prefill step of four prompts (one of 80 tokens: the flash path's several
// query tiles), as one flat vector.
std::vector<float> PrefillLogits(Model& m) {
  std::vector<std::vector<int32_t>> tables(4);
  std::vector<SeqInput> batch(4);
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> ids(s == 1 ? 80 : 5 + 3 * s);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + s * 11) % 251);
    EXPECT_TRUE(m.blocks().Reserve(tables[s], static_cast<int>(ids.size())));
    batch[s] = {ids, 0, &tables[s], true};
  }
  auto r = m.Forward(batch, nullptr);
  EXPECT_TRUE(r.ok()) << r.status();
  for (auto& t : tables) m.blocks().Release(t);
  if (!r.ok()) return {};
  return std::vector<float>(r->logits.As<float>(), r->logits.As<float>() + r->logits.shape().NumElements());
}

// Pipelined stages (micro-batches in flight on two logical devices of one card, the residual
// handed over by events, never by synchronising the other stage) and offloaded layers give
// exactly what one stage computes; repeated, so that a hand-off race would show.
TEST_P(GoldenOnGpu, PipelinedStagesAndOffloadEqualOneStage) {
  LENSD_REQUIRE_GPU();
  LoadOptions one, two, offload;
  one.model_dir = testing::FamilyDir(GetParam());
  one.devices = "cuda:0";
  two = offload = one;
  two.devices = "cuda:0,cuda:0";
  offload.offload_layers = 1;
  auto a = Model::Load(one), b = Model::Load(two), c = Model::Load(offload);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << b.status() << c.status();
  const std::vector<float> want = PrefillLogits(**a);
  ASSERT_FALSE(want.empty());
  for (int rep = 0; rep < 5; ++rep) {
    EXPECT_EQ(PrefillLogits(**b), want) << "pipelined, repetition " << rep;
    EXPECT_EQ(PrefillLogits(**c), want) << "offloaded, repetition " << rep;
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenOnGpu,
                         ::testing::Values("gpt2", "llama", "qwen2", "gpt_neox", "qwen3", "gemma2",
                                           "phi3_longrope", "mixtral", "qwen3_moe"));

}  // namespace
}  // namespace lensd
