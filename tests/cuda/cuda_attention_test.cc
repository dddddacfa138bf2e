// gpu: attention on the paged KV pools against CpuBackend — the per-query kernel with maps,
// the flash prefill kernel and the decode kernel, across head dims, grouped-query layouts,
// windows and pool dtypes. Skips without a CUDA device.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/cuda/op_test.h"

namespace lensd {
namespace {

TEST_F(OpTest, PagedAttentionWithScoresPatternGqaWindowAndSoftcap) {
  const int H = 8, Hkv = 2, dh = 64, bs = 16, blocks = 12;
  auto kpool = Zeros({blocks * bs, Hkv, dh}), vpool = Zeros({blocks * bs, Hkv, dh});
  // Two sequences: a 40-token prefill and a decode step at position 70 (blocks out of order).
  std::vector<int32_t> table0 = {3, 0, 7}, table1 = {1, 9, 2, 11, 5};
  // Softcap 2 (scores at scale 0.125 reach a few units, so tanh bends them): Gemma 2.
  for (auto [window, softcap] : {std::pair{0, 0.0f}, {24, 0.0f}, {24, 2.0f}}) {
    auto k = Random({40 + 71, Hkv, dh}), v = Random({40 + 71, Hkv, dh});
    std::vector<int32_t> slots;
    for (int p = 0; p < 40; ++p) slots.push_back(table0[p / bs] * bs + p % bs);
    for (int p = 0; p < 71; ++p) slots.push_back(table1[p / bs] * bs + p % bs);
    KvLayerView ckv{kpool.first.view(), vpool.first.view(), bs}, gkv{kpool.second.view(), vpool.second.view(), bs};
    cpu_->WriteKv(k.first.view(), v.first.view(), slots.data(), ckv);
    gpu_->WriteKv(k.second.view(), v.second.view(), slots.data(), gkv);
    EXPECT_TRUE(Same("k pool", kpool, 0) && Same("v pool", vpool, 0));
    auto q = Random({41, H, dh}), z = Zeros({41, H, dh});
    auto s0 = Zeros({H, 40, 40}), p0 = Zeros({H, 40, 40}), s1 = Zeros({H, 1, 71}), p1 = Zeros({H, 1, 71});
    std::vector<AttentionSeq> cs = {{0, 40, 0, table0.data(), s0.first.view(), p0.first.view()},
                                    {40, 1, 70, table1.data(), s1.first.view(), p1.first.view()}};
    std::vector<AttentionSeq> gs = {{0, 40, 0, table0.data(), s0.second.view(), p0.second.view()},
                                    {40, 1, 70, table1.data(), s1.second.view(), p1.second.view()}};
    cpu_->Attention(q.first.view(), ckv, cs, {0.125f, window, softcap}, z.first.view());
    gpu_->Attention(q.second.view(), gkv, gs, {0.125f, window, softcap}, z.second.view());
    EXPECT_TRUE(Same("z", z, 1e-5));
    EXPECT_TRUE(Same("scores 0", s0, 1e-5) && Same("pattern 0", p0, 1e-5));
    EXPECT_TRUE(Same("scores 1", s1, 1e-5) && Same("pattern 1", p1, 1e-5));
  }
}

// A decode step over 300 keys (many chunks of the per-query kernel's key loop) with scores and
// pattern captured, beside a 40-token prefill; head dim 64 (prefill on the flash kernel) and
// 256 (beyond the flash kernel: the per-query kernel for everything); with and without window.
TEST_F(OpTest, LongDecodeAndHeadDim256) {
  const int H = 8, Hkv = 2, bs = 16, len = 300, blocks = 24;
  std::vector<int32_t> table0 = {23, 1, 4}, table1;
  for (int b = 0; b < (len + bs - 1) / bs; ++b) table1.push_back((b * 7 + 5) % 19 + 5);
  for (int dh : {64, 256}) {
    for (int window : {0, 100}) {
      auto kpool = Zeros({blocks * bs, Hkv, dh}), vpool = Zeros({blocks * bs, Hkv, dh});
      KvLayerView ckv{kpool.first.view(), vpool.first.view(), bs};
      KvLayerView gkv{kpool.second.view(), vpool.second.view(), bs};
      std::vector<int32_t> slots;
      for (int p = 0; p < 40; ++p) slots.push_back(table0[p / bs] * bs + p % bs);
      for (int p = 0; p < len; ++p) slots.push_back(table1[p / bs] * bs + p % bs);
      const int64_t n = static_cast<int64_t>(slots.size());
      auto k = Random({n, Hkv, dh}), v = Random({n, Hkv, dh});
      cpu_->WriteKv(k.first.view(), v.first.view(), slots.data(), ckv);
      gpu_->WriteKv(k.second.view(), v.second.view(), slots.data(), gkv);
      auto q = Random({41, H, dh}), z = Zeros({41, H, dh});
      auto s1 = Zeros({H, 1, len}), p1 = Zeros({H, 1, len});
      std::vector<AttentionSeq> cs = {{0, 40, 0, table0.data(), {}, {}},
                                      {40, 1, len - 1, table1.data(), s1.first.view(), p1.first.view()}};
      std::vector<AttentionSeq> gs = {{0, 40, 0, table0.data(), {}, {}},
                                      {40, 1, len - 1, table1.data(), s1.second.view(), p1.second.view()}};
      const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
      cpu_->Attention(q.first.view(), ckv, cs, {scale, window}, z.first.view());
      gpu_->Attention(q.second.view(), gkv, gs, {scale, window}, z.second.view());
      const std::string at = absl::StrCat(" dh=", dh, " window=", window);
      EXPECT_TRUE(Same("z" + at, z, 1e-5));
      EXPECT_TRUE(Same("scores" + at, s1, 1e-5) && Same("pattern" + at, p1, 1e-5));
    }
  }
}

// Prefill chunks without captured maps take the flash kernel (a fresh prompt, and a chunk
// continuing at position 30); a decode step in the same call takes the per-query kernel. KV
// pools in float32, bfloat16 and float16 (rounded when written, on both backends); head dims
// 64, 128 and 256 (Gemma's, with its shared-memory opt-in); grouped-query 1, 4 and 8.
TEST_F(OpTest, FlashPrefillAttentionMixedWithDecode) {
  const int H = 8, bs = 16, blocks = 24;
  for (DType pool : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int dh : {64, 128, 256}) {
      // GQA 4, 1, 8; softcap 2 on two of them (the flash and decode kernels' tanh).
      for (auto [window, Hkv, softcap] :
           {std::tuple{0, 2, 0.0f}, {24, 2, 2.0f}, {0, 8, 2.0f}, {24, 1, 0.0f}}) {
        const Shape ps{blocks * bs, Hkv, dh};
        Buffer ck = *cpu_->Allocate(pool, ps), cv = *cpu_->Allocate(pool, ps);
        Buffer gk = *gpu_->Allocate(pool, ps), gv = *gpu_->Allocate(pool, ps);
        KvLayerView ckv{ck.view(), cv.view(), bs}, gkv{gk.view(), gv.view(), bs};
        // Tables out of order; sequence lengths 100, 70 (30 cached + 40 new), 71 (decode).
        std::vector<std::vector<int32_t>> tables = {{3, 0, 7, 12, 20, 21, 22}, {1, 9, 2, 11, 5},
                                                    {4, 6, 8, 10, 13}};
        const int lengths[] = {100, 70, 71};
        std::vector<int32_t> slots;
        for (int s = 0; s < 3; ++s) {
          for (int p = 0; p < lengths[s]; ++p) slots.push_back(tables[s][p / bs] * bs + p % bs);
        }
        const int64_t n = static_cast<int64_t>(slots.size());
        auto k = Random({n, Hkv, dh}), v = Random({n, Hkv, dh});
        cpu_->WriteKv(k.first.view(), v.first.view(), slots.data(), ckv);
        gpu_->WriteKv(k.second.view(), v.second.view(), slots.data(), gkv);
        auto q = Random({141, H, dh}), z = Zeros({141, H, dh});
        std::vector<AttentionSeq> seqs = {{0, 100, 0, tables[0].data(), {}, {}},
                                          {100, 40, 30, tables[1].data(), {}, {}},
                                          {140, 1, 70, tables[2].data(), {}, {}}};
        const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
        cpu_->Attention(q.first.view(), ckv, seqs, {scale, window, softcap}, z.first.view());
        gpu_->Attention(q.second.view(), gkv, seqs, {scale, window, softcap}, z.second.view());
        EXPECT_TRUE(Same(absl::StrCat("z ", std::string(DTypeName(pool)), " dh=", dh,
                                      " window=", window, " kv heads=", Hkv, " softcap=", softcap),
                         z, 1e-5));
      }
    }
  }
}

// Decode queries whose maps nobody reads take the decode kernel (a block per query and key/value
// head, all its query heads together, keys split over warps): groups of 1, 8 and 16 query heads
// (16 takes two blocks), several sequences at different lengths, with and without a window.
TEST_F(OpTest, DecodeKernelAcrossGroupsLengthsAndWindows) {
  const int H = 16, bs = 16, blocks = 40;
  for (int dh : {64, 256}) {
    for (int Hkv : {16, 2, 1}) {
      for (int window : {0, 37}) {
        const Shape ps{blocks * bs, Hkv, dh};
        auto kpool = Zeros(ps), vpool = Zeros(ps);
        KvLayerView ckv{kpool.first.view(), vpool.first.view(), bs};
        KvLayerView gkv{kpool.second.view(), vpool.second.view(), bs};
        std::vector<std::vector<int32_t>> tables(3);
        const int lengths[] = {1, 77, 300};
        std::vector<int32_t> slots;
        for (int s = 0, next = 0; s < 3; ++s) {
          for (int b = 0; b * bs < lengths[s]; ++b) tables[s].push_back((next++ * 7) % blocks);
          for (int p = 0; p < lengths[s]; ++p) slots.push_back(tables[s][p / bs] * bs + p % bs);
        }
        const int64_t n = static_cast<int64_t>(slots.size());
        auto k = Random({n, Hkv, dh}), v = Random({n, Hkv, dh});
        cpu_->WriteKv(k.first.view(), v.first.view(), slots.data(), ckv);
        gpu_->WriteKv(k.second.view(), v.second.view(), slots.data(), gkv);
        auto q = Random({3, H, dh}), z = Zeros({3, H, dh});
        std::vector<AttentionSeq> seqs;
        for (int s = 0; s < 3; ++s) seqs.push_back({s, 1, lengths[s] - 1, tables[s].data(), {}, {}});
        const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
        cpu_->Attention(q.first.view(), ckv, seqs, {scale, window}, z.first.view());
        gpu_->Attention(q.second.view(), gkv, seqs, {scale, window}, z.second.view());
        EXPECT_TRUE(Same(absl::StrCat("z dh=", dh, " kv heads=", Hkv, " window=", window), z,
                         1e-5));
      }
    }
  }
}

}  // namespace
}  // namespace lensd
