#include "engine/cpu/cpu_gradients.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/cpu/gemm.h"
#include "engine/cpu/rotary.h"

namespace lensd {
namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654, kInvSqrt2 = 0.7071067811865476;

// act(x) and act'(x) in double: gradients need not match the forward's SIMD bits, only be
// the same on every machine.
void ActAndSlope(ActKind kind, double x, double* a, double* slope) {
  switch (kind) {
    case ActKind::kGeluTanh: {
      const double u = kSqrt2OverPi * (x + 0.044715 * x * x * x), t = std::tanh(u);
      *a = 0.5 * x * (1 + t);
      *slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * kSqrt2OverPi * (1 + 3 * 0.044715 * x * x);
      return;
    }
    case ActKind::kGeluErf: {
      const double cdf = 0.5 * (1 + std::erf(x * kInvSqrt2));
      *a = x * cdf;
      *slope = cdf + x * std::exp(-0.5 * x * x) * 0.3989422804014327;
      return;
    }
    case ActKind::kSilu: {
      const double sig = 1 / (1 + std::exp(-x));
      *a = x * sig;
      *slope = sig * (1 + x * (1 - sig));
      return;
    }
    case ActKind::kRelu:
      *a = x > 0 ? x : 0;
      *slope = x > 0 ? 1 : 0;
      return;
  }
}

// Weight w[n, i] of a matrix packed by PackMatrix (gemm.h), for the kPanel rows of panel p:
// row[j] = w[p·kPanel + j, i] (zero past n).
void PanelColumn(TensorView w, int64_t p, int64_t i, float* row) {
  const int64_t kp = PackedK(w.dtype, w.shape[1]);
  if (w.dtype == DType::kF32) {
    std::copy_n(w.As<float>() + PackedIndex(w.dtype, kp, p, 0, i), kPanel, row);
    return;
  }
  const uint16_t* base = static_cast<const uint16_t*>(w.data);
  for (int64_t j = 0; j < kPanel; ++j) {
    ConvertToF32(w.dtype, base + PackedIndex(w.dtype, kp, p, j, i), row + j, 1);
  }
}

class CpuGradientOps : public GradientOps {
 public:
  CpuGradientOps(ThreadPool& pool, SimdLevel level) : pool_(pool), level_(level) {}

  // dx = dy · w as forward GEMMs against wᵀ, packed per call a block of kColumns input
  // columns at a time (O(N·K) against the GEMM's O(T·N·K), and bounded memory for a
  // vocabulary-sized w): the same batch-invariant kernels as Linear, each dx[t, i] one chain
  // over all N.
  void LinearBackward(TensorView dy, TensorView w, TensorView dx) override {
    constexpr int64_t kColumns = 256;  // a multiple of kPanel
    const int64_t T = dy.shape[0], N = w.shape[0], K = w.shape[1];
    const int64_t panels = (N + kPanel - 1) / kPanel;
    for (int64_t c0 = 0; c0 < K; c0 += kColumns) {
      const int64_t cols = std::min(kColumns, K - c0);
      transposed_.resize(static_cast<size_t>(cols * N));
      pool_.ParallelFor(cols, 16, [&](int64_t i0, int64_t i1) {
        float row[kPanel];
        for (int64_t i = i0; i < i1; ++i) {
          for (int64_t p = 0; p < panels; ++p) {
            PanelColumn(w, p, c0 + i, row);
            const int64_t width = std::min(kPanel, N - p * kPanel);
            std::copy_n(row, width, transposed_.data() + i * N + p * kPanel);
          }
        }
      });
      const int64_t bytes = PackedBytes(DType::kF32, cols, N);
      if (packed_.NumBytes() < static_cast<size_t>(bytes)) {
        packed_ = Buffer::Host(DType::kF32, {bytes / 4});  // 64-byte aligned, as the kernels load
      }
      PackMatrix(transposed_.data(), cols, N, DType::kF32, packed_.As<void>());
      out_.resize(static_cast<size_t>(T * cols));
      GemmProblem g;
      g.x = dy.As<float>(), g.T = T, g.ldx = N;
      g.w = packed_.As<void>(), g.dtype = DType::kF32, g.k = N, g.n = cols;
      g.y = out_.data();
      pool_.ParallelFor((cols + kPanel - 1) / kPanel, T == 1 ? 4 : 1,
                        [&](int64_t p0, int64_t p1) { GemmPanels(g, p0, p1, level_); });
      for (int64_t t = 0; t < T; ++t) {
        std::copy_n(out_.data() + t * cols, cols, dx.As<float>() + t * K + c0);
      }
    }
  }

  void NormBackward(NormKind kind, TensorView x, TensorView w, float eps, TensorView dy,
                    TensorView dx) override {
    const int64_t T = x.shape[0], D = x.shape[1];
    pool_.ParallelFor(T, 1, [&](int64_t t0, int64_t t1) {
      std::vector<double> n(static_cast<size_t>(D)), dn(static_cast<size_t>(D));
      for (int64_t t = t0; t < t1; ++t) {
        const float* xr = x.As<float>() + t * D;
        const float* g = dy.As<float>() + t * D;
        double mean = 0, sq = 0;
        if (kind == NormKind::kLayerNorm) {
          for (int64_t d = 0; d < D; ++d) mean += xr[d];
          mean /= D;
        }
        for (int64_t d = 0; d < D; ++d) sq += (xr[d] - mean) * (xr[d] - mean);
        const double s = std::sqrt(sq / D + eps);
        double mean_dn = 0, mean_dn_n = 0;
        for (int64_t d = 0; d < D; ++d) {
          n[d] = (xr[d] - mean) / s;
          dn[d] = g[d] * (w.empty() ? 1.0 : w.As<float>()[d]);
          mean_dn += dn[d], mean_dn_n += dn[d] * n[d];
        }
        mean_dn /= D, mean_dn_n /= D;
        if (kind == NormKind::kRmsNorm) mean_dn = 0;  // nothing was centred
        for (int64_t d = 0; d < D; ++d) {
          dx.As<float>()[t * D + d] = static_cast<float>((dn[d] - mean_dn - n[d] * mean_dn_n) / s);
        }
      }
    });
  }

  void RopeBackward(TensorView dx, TensorView inv_freq, int rotary_dim, const int32_t* positions,
                    float scale) override {
    RotateHalves(pool_, dx, inv_freq, rotary_dim, positions, scale, /*transposed=*/true);
  }

  void ActivationBackward(ActKind kind, TensorView x, TensorView dy, TensorView dx) override {
    pool_.ParallelFor(x.NumElements(), 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        double a, slope;
        ActAndSlope(kind, x.As<float>()[i], &a, &slope);
        dx.As<float>()[i] = static_cast<float>(dy.As<float>()[i] * slope);
      }
    });
  }

  void GatedActivationBackward(ActKind kind, TensorView gate, TensorView up, TensorView dy,
                               TensorView dgate, TensorView dup) override {
    pool_.ParallelFor(gate.NumElements(), 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        double a, slope;
        ActAndSlope(kind, gate.As<float>()[i], &a, &slope);
        const double g = dy.As<float>()[i];
        dgate.As<float>()[i] = static_cast<float>(g * up.As<float>()[i] * slope);
        dup.As<float>()[i] = static_cast<float>(g * a);
      }
    });
  }

  void ScaleAndCapBackward(TensorView y, float scale, float cap, TensorView dy) override {
    for (int64_t i = 0; i < y.NumElements(); ++i) {
      double slope = scale;
      if (cap > 0.0f) {
        const double t = y.As<float>()[i] / cap;  // tanh(scale · x / cap)
        slope *= 1 - t * t;
      }
      dy.As<float>()[i] = static_cast<float>(dy.As<float>()[i] * slope);
    }
  }

  void AttentionBackward(TensorView q, TensorView k, TensorView v, const std::vector<SeqRows>& seqs,
                         const AttentionParams& params, TensorView dz, TensorView dq, TensorView dk,
                         TensorView dv) override;

  void RowOpsBackward(TensorView grad, TensorView x, const RowOpPlan& plan) override {
    RowOpsBackwardHost(grad.As<float>(), x.empty() ? nullptr : x.As<float>(), plan);
  }

 private:
  // One (sequence, key/value head): every query head of its group, in order, so dk and dv of
  // its keys sum the group's contributions in a fixed order.
  void AttentionGroupBackward(TensorView q, TensorView k, TensorView v, const SeqRows& s,
                              int kv_head, const AttentionParams& params, TensorView dz,
                              TensorView dq, TensorView dk, TensorView dv);

  ThreadPool& pool_;
  const SimdLevel level_;
  std::vector<float> transposed_;  // LinearBackward's block of wᵀ, then packed,
  Buffer packed_;
  std::vector<float> out_;  // and its block of dx
};

void CpuGradientOps::AttentionBackward(TensorView q, TensorView k, TensorView v,
                                       const std::vector<SeqRows>& seqs,
                                       const AttentionParams& params, TensorView dz, TensorView dq,
                                       TensorView dk, TensorView dv) {
  const int hkv = static_cast<int>(k.shape[1]);
  const int64_t items = static_cast<int64_t>(seqs.size()) * hkv;
  pool_.ParallelFor(items, 1, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      AttentionGroupBackward(q, k, v, seqs[it / hkv], static_cast<int>(it % hkv), params, dz, dq,
                             dk, dv);
    }
  });
}

void CpuGradientOps::AttentionGroupBackward(TensorView q, TensorView k, TensorView v,
                                            const SeqRows& s, int kv_head,
                                            const AttentionParams& params, TensorView dz,
                                            TensorView dq, TensorView dk, TensorView dv) {
  const int H = static_cast<int>(q.shape[1]), hkv = static_cast<int>(k.shape[1]);
  const int64_t dh = q.shape[2], group = H / hkv;
  auto row = [dh](TensorView t, int64_t heads, int64_t pos, int64_t h) {
    return t.As<float>() + (pos * heads + h) * dh;
  };
  for (int j = 0; j < s.n; ++j) {
    std::fill_n(row(dk, hkv, s.begin + j, kv_head), dh, 0.0f);
    std::fill_n(row(dv, hkv, s.begin + j, kv_head), dh, 0.0f);
  }
  std::vector<double> p(static_cast<size_t>(s.n)), capped(static_cast<size_t>(s.n));
  std::vector<double> ds(static_cast<size_t>(s.n));
  for (int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    for (int i = 0; i < s.n; ++i) {
      const float* qi = row(q, H, s.begin + i, h);
      const float* g = row(dz, H, s.begin + i, h);
      const int lo = params.window > 0 ? std::max(0, i - params.window + 1) : 0;
      // The pattern over the visible keys [lo, i], recomputed in double.
      double max_score = -std::numeric_limits<double>::infinity();
      for (int j = lo; j <= i; ++j) {
        const float* kj = row(k, hkv, s.begin + j, kv_head);
        double dot = 0;
        for (int64_t d = 0; d < dh; ++d) dot += static_cast<double>(qi[d]) * kj[d];
        double score = dot * params.scale;
        if (params.softcap > 0.0f) score = std::tanh(score / params.softcap) * params.softcap;
        capped[j] = score;
        max_score = std::max(max_score, score);
      }
      double sum = 0;
      for (int j = lo; j <= i; ++j) sum += p[j] = std::exp(capped[j] - max_score);
      // dp_j = dz · v_j; ds_j = p_j (dp_j − Σ p dp), through the softcap's tanh.
      double p_dot_dp = 0;
      for (int j = lo; j <= i; ++j) {
        p[j] /= sum;
        const float* vj = row(v, hkv, s.begin + j, kv_head);
        double dp = 0;
        for (int64_t d = 0; d < dh; ++d) dp += static_cast<double>(g[d]) * vj[d];
        ds[j] = dp;
        p_dot_dp += p[j] * dp;
      }
      // The maps' gradients of this query row (masked keys 0).
      const int64_t map_row = (h * s.n + i) * int64_t{s.n};
      for (TensorView map : {s.dscores, s.dpattern}) {
        if (!map.empty()) std::fill_n(map.As<float>() + map_row, s.n, 0.0f);
      }
      for (int j = lo; j <= i; ++j) {
        if (!s.dpattern.empty()) s.dpattern.As<float>()[map_row + j] = static_cast<float>(ds[j]);
        if (!s.dscores.empty()) {
          s.dscores.As<float>()[map_row + j] = static_cast<float>(p[j] * (ds[j] - p_dot_dp));
        }
      }
      float* dqi = row(dq, H, s.begin + i, h);
      std::vector<double> acc_q(static_cast<size_t>(dh), 0.0);
      for (int j = lo; j <= i; ++j) {
        double d_score = p[j] * (ds[j] - p_dot_dp);
        if (params.softcap > 0.0f) {
          const double t = capped[j] / params.softcap;
          d_score *= 1 - t * t;
        }
        d_score *= params.scale;
        const float* kj = row(k, hkv, s.begin + j, kv_head);
        float* dkj = row(dk, hkv, s.begin + j, kv_head);
        float* dvj = row(dv, hkv, s.begin + j, kv_head);
        for (int64_t d = 0; d < dh; ++d) {
          acc_q[d] += d_score * kj[d];
          dkj[d] += static_cast<float>(d_score * qi[d]);
          dvj[d] += static_cast<float>(p[j] * g[d]);
        }
      }
      for (int64_t d = 0; d < dh; ++d) dqi[d] = static_cast<float>(acc_q[d]);
    }
  }
}

}  // namespace

std::unique_ptr<GradientOps> MakeCpuGradientOps(ThreadPool& pool, SimdLevel level) {
  return std::make_unique<CpuGradientOps>(pool, level);
}

}  // namespace lensd
