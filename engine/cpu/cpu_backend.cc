#include "engine/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_gradients.h"
#include "engine/cpu/gemm.h"
#include "engine/cpu/host_pool.h"
#include "engine/cpu/rotary.h"
#include "engine/cpu/thread_pool.h"
#include "engine/cpu/vec_ops.h"

namespace lensd {
namespace {

class CpuBackend : public Backend {
 public:
  CpuBackend(int index, int threads)
      : index_(index),
        pool_(threads),
        level_(DetectSimdLevel()),
        ops_(VecOpsFor(level_)),
        gradients_(MakeCpuGradientOps(pool_, level_)) {}
  std::string Name() const override { return absl::StrCat("cpu:", index_); }

  absl::StatusOr<Buffer> Allocate(DType dtype, Shape shape) override {
    return PooledHostBuffer(dtype, shape);
  }
  // Matrices are stored packed for the GEMM kernels (gemm.h); only Linear reads them.
  absl::StatusOr<Buffer> AllocateMatrix(DType dtype, Shape shape) override {
    return PooledHostBuffer(dtype, shape, PackedBytes(dtype, shape[0], shape[1]));
  }
  void UploadMatrix(const float* host, TensorView dst) override {
    PackMatrix(host, dst.shape[0], dst.shape[1], dst.dtype, dst.data);
  }
  void Upload(const float* host, TensorView dst) override {
    ConvertFromF32(host, dst.dtype, dst.data, dst.NumElements());
  }
  void Download(TensorView src, float* host) override {
    ConvertToF32(src.dtype, src.data, host, src.NumElements());
  }
  // Device memory is host memory: the tensor itself is delivered, without a copy.
  void CaptureAsync(TensorView src, const std::function<void(TensorView)>& deliver) override {
    deliver(src);
  }

  void Linear(TensorView x, TensorView w, TensorView bias, TensorView y) override;
  void Gather(TensorView table, const int32_t* ids, TensorView y) override {
    const int64_t D = table.shape[1];
    const size_t row_bytes = D * DTypeSize(table.dtype);
    for (int64_t t = 0; t < y.shape[0]; ++t) {
      ConvertToF32(table.dtype, static_cast<const char*>(table.data) + ids[t] * row_bytes,
                   y.As<float>() + t * D, D);
    }
  }
  void Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps, TensorView y,
            TensorView normalized, TensorView scale) override;
  void Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions,
            float scale) override;
  // The pool may be float32, bfloat16 or float16 (the model dtype): rows are rounded into it.
  void WriteKv(TensorView k, TensorView v, const int32_t* slots, KvLayerView kv) override {
    const int64_t row = k.NumElements() / std::max<int64_t>(1, k.shape[0]);
    const size_t row_bytes = row * DTypeSize(kv.k.dtype);
    for (int64_t t = 0; t < k.shape[0]; ++t) {
      ConvertFromF32(k.As<float>() + t * row, kv.k.dtype,
                     static_cast<char*>(kv.k.data) + slots[t] * row_bytes, row);
      ConvertFromF32(v.As<float>() + t * row, kv.v.dtype,
                     static_cast<char*>(kv.v.data) + slots[t] * row_bytes, row);
    }
  }
  void Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                 const AttentionParams& params, TensorView z) override;
  void Activation(ActKind kind, TensorView x, TensorView y) override {
    Elementwise(kind, x, {}, y);
  }
  void GatedActivation(ActKind kind, TensorView gate, TensorView up, TensorView y) override {
    Elementwise(kind, gate, up, y);
  }
  // Panels of kPanel rows: rows [begin, begin + n) start at panel begin / kPanel.
  TensorView MatrixRows(TensorView w, int64_t begin, int64_t n) override {
    return {static_cast<char*>(w.data) + PackedBytes(w.dtype, begin, w.shape[1]),
            w.dtype,
            {n, w.shape[1]}};
  }
  void AddRowsScaled(TensorView src, const int32_t* rows, const float* scales,
                     TensorView dst) override {
    const int64_t d = src.shape[1];
    for (int64_t i = 0; i < src.shape[0]; ++i) {
      float* out = dst.As<float>() + int64_t{rows[i]} * d;
      const float* in = src.As<float>() + i * d;
      for (int64_t j = 0; j < d; ++j) {
        const float scaled = in[j] * scales[i];
        out[j] += scaled;
      }
    }
  }
  void ScaleAndCap(TensorView x, float scale, float cap) override {
    float* v = x.As<float>();
    for (int64_t i = 0; i < x.NumElements(); ++i) {
      v[i] *= scale;
      if (cap > 0.0f) v[i] = std::tanh(v[i] / cap) * cap;
    }
  }
  void Add(TensorView a, TensorView b, TensorView y) override {
    for (int64_t i = 0; i < a.NumElements(); ++i) {
      y.As<float>()[i] = a.As<float>()[i] + b.As<float>()[i];
    }
  }
  void Synchronize() override {}
  void Copy(TensorView src, TensorView dst) override {
    std::memcpy(dst.data, src.data, src.NumBytes());
  }
  // Host memory: the reference implementation runs in place.
  void ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan) override {
    ApplyRowOpsHost(x.As<float>(), source.empty() ? nullptr : source.As<float>(), plan);
  }
  GradientOps* gradients() override { return gradients_.get(); }

 private:
  void Elementwise(ActKind kind, TensorView x, TensorView up, TensorView y) {
    pool_.ParallelFor(x.NumElements(), 4096, [&](int64_t begin, int64_t end) {
      ops_.activation(static_cast<int>(kind), x.As<float>() + begin,
                      up.empty() ? nullptr : up.As<float>() + begin, y.As<float>() + begin,
                      end - begin);
    });
  }
  // Keys and values [0, n) of one KV head of a sequence as float32 rows: pointers into the
  // pool, or (bfloat16 / float16 pools) into rows widened once for every query and head of
  // the group that reads them.
  struct KvRows {
    std::vector<const float*> k, v;
    std::vector<float> widened;
  };
  void GatherKvRows(KvLayerView kv, const AttentionSeq& s, int kv_head, int n, KvRows& rows) const;
  void AttendOne(const float* q, const KvRows& rows, int64_t dh, const AttentionSeq& s, int i,
                 int h, const AttentionParams& params, float* probs, float* z) const;

  int index_;
  ThreadPool pool_;
  const SimdLevel level_;
  const VecOps& ops_;
  std::unique_ptr<GradientOps> gradients_;
  std::vector<float> inputs_;  // Linear's input rounded to the weights' dtype (and padded)
};

// Reduced-precision weights compute as the GPU does: inputs rounded to the weights' dtype,
// float32 accumulation. Threads split the panels of output columns, never k (gemm.h).
void CpuBackend::Linear(TensorView x, TensorView w, TensorView bias, TensorView y) {
  GemmProblem g;
  g.T = x.shape[0], g.n = w.shape[0], g.dtype = w.dtype, g.w = w.data;
  const int64_t K = w.shape[1];
  g.k = PackedK(w.dtype, K);
  g.x = x.As<float>(), g.ldx = K;
  if (w.dtype != DType::kF32) {
    inputs_.assign(static_cast<size_t>(g.T * g.k), 0.0f);
    std::vector<uint16_t> narrow(static_cast<size_t>(K));
    for (int64_t t = 0; t < g.T; ++t) {
      ConvertFromF32(x.As<float>() + t * K, w.dtype, narrow.data(), K);
      ConvertToF32(w.dtype, narrow.data(), inputs_.data() + t * g.k, K);
    }
    g.x = inputs_.data(), g.ldx = g.k;
  }
  g.bias = bias.empty() ? nullptr : bias.As<float>();
  g.y = y.As<float>();
  const int64_t panels = (g.n + kPanel - 1) / kPanel;
  pool_.ParallelFor(panels, g.T == 1 ? 4 : 1,
                    [&](int64_t p0, int64_t p1) { GemmPanels(g, p0, p1, level_); });
}

void CpuBackend::Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps,
                      TensorView y, TensorView normalized, TensorView scale) {
  const int64_t T = x.shape[0], D = x.shape[1];
  pool_.ParallelFor(T, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x.As<float>() + t * D;
      float* yr = y.As<float>() + t * D;
      double mean = 0;
      if (kind == NormKind::kLayerNorm) {
        for (int64_t d = 0; d < D; ++d) mean += xr[d];
        mean /= D;
      }
      double sq = 0;
      for (int64_t d = 0; d < D; ++d) sq += (xr[d] - mean) * (xr[d] - mean);
      const float s = static_cast<float>(std::sqrt(sq / D + eps));
      if (!scale.empty()) scale.As<float>()[t] = s;
      for (int64_t d = 0; d < D; ++d) {
        float n = static_cast<float>(xr[d] - mean) / s;
        if (!normalized.empty()) normalized.As<float>()[t * D + d] = n;
        if (!w.empty()) n *= w.As<float>()[d];
        if (!b.empty()) n += b.As<float>()[d];
        yr[d] = n;
      }
    }
  });
}

void CpuBackend::Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions,
                      float scale) {
  RotateHalves(pool_, x, inv_freq, rotary_dim, positions, scale, /*transposed=*/false);
}

void CpuBackend::GatherKvRows(KvLayerView kv, const AttentionSeq& s, int kv_head, int n,
                              KvRows& rows) const {
  const int64_t hkv = kv.k.shape[1], dh = kv.k.shape[2], bs = kv.block_size;
  const bool f32 = kv.k.dtype == DType::kF32;
  rows.k.resize(static_cast<size_t>(n)), rows.v.resize(static_cast<size_t>(n));
  if (!f32) rows.widened.resize(static_cast<size_t>(2 * n * dh));
  for (int j = 0; j < n; ++j) {
    const int64_t at = ((int64_t{s.block_table[j / bs]} * bs + j % bs) * hkv + kv_head) * dh;
    if (f32) {
      rows.k[j] = kv.k.As<float>() + at, rows.v[j] = kv.v.As<float>() + at;
      continue;
    }
    float* k = rows.widened.data() + 2 * j * dh;
    const bool f16 = kv.k.dtype == DType::kF16;
    ops_.widen(f16, static_cast<const uint16_t*>(kv.k.data) + at, k, dh);
    ops_.widen(f16, static_cast<const uint16_t*>(kv.v.data) + at, k + dh, dh);
    rows.k[j] = k, rows.v[j] = k + dh;
  }
}

void CpuBackend::AttendOne(const float* q, const KvRows& rows, int64_t dh, const AttentionSeq& s,
                           int i, int h, const AttentionParams& params, float* probs,
                           float* z) const {
  using Input = AttentionSeq::Input;
  const int pos = s.start_pos + i, n_k = s.start_pos + s.n_q;
  const int64_t map_row = (int64_t{h} * s.n_q + i) * n_k;
  const float inf = std::numeric_limits<float>::infinity();
  if (s.input == Input::kQueries) {
    for (int j = 0; j < n_k; ++j) {
      const bool visible = j <= pos && (params.window <= 0 || pos - j < params.window);
      probs[j] = visible ? ops_.dot(q, rows.k[j], dh) * params.scale : -inf;
      if (visible && params.softcap > 0.0f) {
        probs[j] = std::tanh(probs[j] / params.softcap) * params.softcap;
      }
    }
    if (!s.scores.empty()) std::memcpy(s.scores.As<float>() + map_row, probs, n_k * 4);
  } else {
    const TensorView given = s.input == Input::kScores ? s.scores : s.pattern;
    std::memcpy(probs, given.As<float>() + map_row, n_k * 4);
  }
  if (s.input != Input::kPattern) {
    float max_score = -inf;
    for (int j = 0; j < n_k; ++j) max_score = std::max(max_score, probs[j]);
    if (max_score == -inf) {
      // No admissible key (every given score masked): pattern 0 and z 0, as the reference
      // implementations give, rather than 0/0.
      std::fill(probs, probs + n_k, 0.0f);
    } else {
      const float sum = ops_.exp_shift_sum(probs, max_score, n_k);
      for (int j = 0; j < n_k; ++j) probs[j] /= sum;
    }
    if (!s.pattern.empty()) std::memcpy(s.pattern.As<float>() + map_row, probs, n_k * 4);
  }
  std::fill(z, z + dh, 0.0f);
  for (int j = 0; j < n_k; ++j) {
    if (probs[j] != 0.0f) ops_.axpy(probs[j], rows.v[j], z, dh);
  }
}

void CpuBackend::Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                           const AttentionParams& params, TensorView z) {
  const int H = static_cast<int>(q.shape[1]), dh = static_cast<int>(q.shape[2]);
  const int hkv = static_cast<int>(kv.k.shape[1]), group = H / hkv;
  // Work items: (sequence, KV head, a chunk of queries), each gathering (or widening) the
  // keys and values its queries can see once, for every head of the KV head's group.
  constexpr int kQueries = 32;
  struct Item {
    int s, kv_head, i0, i1;
  };
  std::vector<Item> items;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int g = 0; g < hkv; ++g) {
      for (int i0 = 0; i0 < seqs[s].n_q; i0 += kQueries) {
        items.push_back({static_cast<int>(s), g, i0, std::min(seqs[s].n_q, i0 + kQueries)});
      }
    }
  }
  pool_.ParallelFor(static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
    std::vector<float> probs;
    KvRows rows;
    for (int64_t it = b; it < e; ++it) {
      const Item& w = items[it];
      const AttentionSeq& a = seqs[w.s];
      probs.resize(static_cast<size_t>(a.start_pos + a.n_q));
      // Map rows (scores, pattern) span every key; a query reads only keys up to itself,
      // but given maps (kScores, kPattern) may weight any of them.
      const bool given = a.input != AttentionSeq::Input::kQueries;
      GatherKvRows(kv, a, w.kv_head, given ? a.start_pos + a.n_q : a.start_pos + w.i1, rows);
      for (int h = w.kv_head * group; h < (w.kv_head + 1) * group; ++h) {
        for (int i = w.i0; i < w.i1; ++i) {
          const int64_t r = (int64_t{a.q_begin} + i) * H + h;
          AttendOne(q.As<float>() + r * dh, rows, dh, a, i, h, params, probs.data(),
                    z.As<float>() + r * dh);
        }
      }
    }
  });
}

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int index, int threads) {
  if (threads <= 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return std::make_unique<CpuBackend>(index, threads);
}

std::string CpuKernelFamilies() { return KernelFamilies(DetectSimdLevel()); }

}  // namespace lensd
