#include "engine/cpu/cpu_backend.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lensd {
namespace {

float ApplyAct(ActKind kind, float x) {
  switch (kind) {
    case ActKind::kGeluTanh: {
      const float c = 0.7978845608028654f;  // sqrt(2/pi)
      return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
    }
    case ActKind::kGeluErf:
      return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
    case ActKind::kSilu:
      return x / (1.0f + std::exp(-x));
    case ActKind::kRelu:
      return x > 0 ? x : 0.0f;
  }
  return x;
}

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int index) : index_(index) {}
  std::string Name() const override { return absl::StrCat("cpu:", index_); }

  absl::StatusOr<Buffer> Allocate(DType dtype, Shape shape) override {
    return Buffer::Host(dtype, shape);
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

  // OpenBLAS picks different kernels (different rounding) for different row counts, and
  // splits work differently for different thread counts, so a row's result would depend on
  // its batch-mates and on --threads. Every sgemm call therefore gets exactly kRowTile rows —
  // the last partial tile zero-padded — and one block of kColBlock output columns, and runs
  // single-threaded; OpenMP threads share out the (column block, row tile) pairs. Each row's
  // arithmetic is thus independent of the batch and of the thread count (the scheduler's
  // batch-invariance guarantee rests on this). Column blocks are the outer loop so a thread
  // reuses its block of weights across row tiles.
  //
  // Weights in bfloat16/float16 compute as the GPU does: the inputs are rounded to the
  // weights' dtype, products accumulate in float32. A thread widens a block of weights to
  // float32 once for all its row tiles of that block.
  static constexpr int kRowTile = 8;
  static constexpr int kColBlock = 128;

  void Linear(TensorView x, TensorView w, TensorView bias, TensorView y) override {
    const int T = static_cast<int>(x.shape[0]);
    const int K = static_cast<int>(w.shape[1]);
    const int N = static_cast<int>(w.shape[0]);
    const int tiles = (T + kRowTile - 1) / kRowTile, blocks = (N + kColBlock - 1) / kColBlock;
    const int full = T / kRowTile * kRowTile, rest = T - full;
    const float* xs = x.As<float>();
    if (w.dtype != DType::kF32) {
      rounded_.resize(static_cast<size_t>(x.NumElements()));
      RoundTo(w.dtype, xs, rounded_.data(), rounded_.size());
      xs = rounded_.data();
    }
    if (rest > 0) {
      pad_in_.assign(size_t{kRowTile} * K, 0.0f);
      pad_out_.resize(size_t{kRowTile} * N);
      std::memcpy(pad_in_.data(), xs + int64_t{full} * K, static_cast<size_t>(rest) * K * 4);
    }
#pragma omp parallel
    {
      std::vector<float> widened;  // this thread's block of weights in float32
      int widened_block = -1;
#pragma omp for collapse(2) schedule(static)
      for (int nb = 0; nb < blocks; ++nb) {
        for (int t = 0; t < tiles; ++t) {
          const int n0 = nb * kColBlock, nn = std::min(kColBlock, N - n0);
          const float* wb = WeightBlock(w, n0, nn, nb, widened, widened_block);
          const bool padded = t * kRowTile == full;
          const float* a = padded ? pad_in_.data() : xs + int64_t{t} * kRowTile * K;
          float* c = padded ? pad_out_.data() + n0 : y.As<float>() + int64_t{t} * kRowTile * N + n0;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kRowTile, nn, K, 1.0f, a, K, wb, K,
                      0.0f, c, N);
        }
      }
    }
    if (rest > 0) {
      std::memcpy(y.As<float>() + int64_t{full} * N, pad_out_.data(),
                  static_cast<size_t>(rest) * N * 4);
    }
    if (bias.empty()) return;
    for (int t = 0; t < T; ++t) {
      float* row = y.As<float>() + static_cast<int64_t>(t) * N;
      for (int n = 0; n < N; ++n) row[n] += bias.As<float>()[n];
    }
  }

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
  void Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions) override;
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
  void Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs, float scale,
                 int window, TensorView z) override;

  void Activation(ActKind kind, TensorView x, TensorView y) override {
    for (int64_t i = 0; i < x.NumElements(); ++i) y.As<float>()[i] = ApplyAct(kind, x.As<float>()[i]);
  }
  void GatedActivation(ActKind kind, TensorView gate, TensorView up, TensorView y) override {
    for (int64_t i = 0; i < gate.NumElements(); ++i) {
      y.As<float>()[i] = ApplyAct(kind, gate.As<float>()[i]) * up.As<float>()[i];
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

 private:
  void AttendOne(const float* q, int kv_head, const AttentionSeq& s, int i, int h, KvLayerView kv,
                 float scale, int window, float* probs, float* z, std::vector<float>& row);
  // Key or value `j` of `kv_head` as float32: in the pool, or widened into `row`.
  static const float* KvRow(TensorView pool, const AttentionSeq& s, int block_size, int j,
                            int kv_head, std::vector<float>& row) {
    const int64_t hkv = pool.shape[1], dh = pool.shape[2];
    const int64_t slot = int64_t{s.block_table[j / block_size]} * block_size + j % block_size;
    const int64_t at = (slot * hkv + kv_head) * dh;
    if (pool.dtype == DType::kF32) return pool.As<float>() + at;
    row.resize(static_cast<size_t>(dh));
    ConvertToF32(pool.dtype, static_cast<const char*>(pool.data) + at * DTypeSize(pool.dtype),
                 row.data(), row.size());
    return row.data();
  }
  // Rows [n0, n0 + nn) of w as float32: in place for float32 weights, else widened into
  // `widened` (kept while `widened_block` == nb).
  static const float* WeightBlock(TensorView w, int n0, int nn, int nb, std::vector<float>& widened,
                                  int& widened_block) {
    const int64_t K = w.shape[1];
    if (w.dtype == DType::kF32) return w.As<float>() + n0 * K;
    if (widened_block != nb) {
      widened.resize(static_cast<size_t>(nn * K));
      ConvertToF32(w.dtype, static_cast<const char*>(w.data) + n0 * K * DTypeSize(w.dtype),
                   widened.data(), widened.size());
      widened_block = nb;
    }
    return widened.data();
  }
  // x rounded to `dtype` and back.
  static void RoundTo(DType dtype, const float* x, float* out, size_t n) {
    std::vector<uint16_t> narrow(n);
    ConvertFromF32(x, dtype, narrow.data(), n);
    ConvertToF32(dtype, narrow.data(), out, n);
  }

  int index_;
  std::vector<float> pad_in_, pad_out_;  // the padded last tile of Linear
  std::vector<float> rounded_;           // Linear's input rounded to the weights' dtype
};

void CpuBackend::Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps,
                      TensorView y, TensorView normalized, TensorView scale) {
  const int64_t T = x.shape[0], D = x.shape[1];
  for (int64_t t = 0; t < T; ++t) {
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
}

void CpuBackend::Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions) {
  const int64_t T = x.shape[0], heads = x.shape[1], dh = x.shape[2];
  const int half = rotary_dim / 2;
  for (int64_t t = 0; t < T; ++t) {
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(positions[t]) * inv_freq.As<float>()[i];
      const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
      for (int64_t h = 0; h < heads; ++h) {
        float* row = x.As<float>() + (t * heads + h) * dh;
        const float x1 = row[i], x2 = row[i + half];
        row[i] = x1 * c - x2 * s;
        row[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

void CpuBackend::AttendOne(const float* q, int kv_head, const AttentionSeq& s, int i, int h,
                           KvLayerView kv, float scale, int window, float* probs, float* z,
                           std::vector<float>& row) {
  using Input = AttentionSeq::Input;
  const int64_t dh = kv.k.shape[2];
  const int pos = s.start_pos + i, n_k = s.start_pos + s.n_q;
  const int64_t map_row = (int64_t{h} * s.n_q + i) * n_k;
  const float inf = std::numeric_limits<float>::infinity();
  if (s.input == Input::kQueries) {
    for (int j = 0; j < n_k; ++j) {
      const bool visible = j <= pos && (window <= 0 || pos - j < window);
      float score = -inf;
      if (visible) {
        const float* k = KvRow(kv.k, s, kv.block_size, j, kv_head, row);
        float dot = 0;
        for (int64_t d = 0; d < dh; ++d) dot += q[d] * k[d];
        score = dot * scale;
      }
      probs[j] = score;
    }
    if (!s.scores.empty()) std::memcpy(s.scores.As<float>() + map_row, probs, n_k * 4);
  } else {
    const TensorView given = s.input == Input::kScores ? s.scores : s.pattern;
    std::memcpy(probs, given.As<float>() + map_row, n_k * 4);
  }
  if (s.input != Input::kPattern) {
    float max_score = -inf;
    for (int j = 0; j < n_k; ++j) max_score = std::max(max_score, probs[j]);
    double sum = 0;
    for (int j = 0; j < n_k; ++j) {
      probs[j] = probs[j] == -inf ? 0.0f : std::exp(probs[j] - max_score);
      sum += probs[j];
    }
    for (int j = 0; j < n_k; ++j) probs[j] = static_cast<float>(probs[j] / sum);
    if (!s.pattern.empty()) std::memcpy(s.pattern.As<float>() + map_row, probs, n_k * 4);
  }
  std::fill(z, z + dh, 0.0f);
  for (int j = 0; j < n_k; ++j) {
    if (probs[j] == 0.0f) continue;
    const float* v = KvRow(kv.v, s, kv.block_size, j, kv_head, row);
    for (int64_t d = 0; d < dh; ++d) z[d] += probs[j] * v[d];
  }
}

void CpuBackend::Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                           float scale, int window, TensorView z) {
  const int H = static_cast<int>(q.shape[1]), dh = static_cast<int>(q.shape[2]);
  const int group = H / static_cast<int>(kv.k.shape[1]);
  for (const AttentionSeq& s : seqs) {
    const int n_k = s.start_pos + s.n_q;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < s.n_q; ++i) {
      for (int h = 0; h < H; ++h) {
        std::vector<float> probs(n_k), kv_row;
        const int64_t row = (int64_t{s.q_begin} + i) * H + h;
        AttendOne(q.As<float>() + row * dh, h / group, s, i, h, kv, scale, window, probs.data(),
                  z.As<float>() + row * dh, kv_row);
      }
    }
  }
}

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int index) {
  // Parallelism comes from CpuBackend's own OpenMP loops (see Linear); OpenBLAS itself must
  // stay single-threaded for results to be independent of the thread count.
  openblas_set_num_threads(1);
  return std::make_unique<CpuBackend>(index);
}

void SetCpuThreads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
}

}  // namespace lensd
