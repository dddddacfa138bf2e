// The CPU backend's gradient ops against central finite differences of its own forward ops:
// for L(x) = Σ r ⊙ f(x) with random r, each op's backward of r must be dL/dx at every
// coordinate (step sizes where float32 is conclusive: errors ≤ 1% of the gradient's scale,
// while a wrong sign, transpose, missing term or masked key is off by its whole size). Also:
// a sequence's gradients are the same bits alone, batched, and at any thread count.
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

using Vec = std::vector<float>;

Vec Random(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  Vec v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TensorView View(Vec& v, Shape s) { return {v.data(), DType::kF32, s}; }

// max over coordinates of |numeric − analytic| / (1 + max |analytic|) ≤ tol, where numeric
// is the central difference of Σ r ⊙ f(x) at step h.
::testing::AssertionResult MatchesFiniteDifferences(const std::function<Vec(const Vec&)>& f, Vec x,
                                                    const Vec& r, const Vec& analytic, double h,
                                                    double tol = 1e-2) {
  auto loss = [&](const Vec& at) {
    const Vec y = f(at);
    double sum = 0;
    for (size_t i = 0; i < y.size(); ++i) sum += static_cast<double>(r[i]) * y[i];
    return sum;
  };
  double scale = 0;
  for (float g : analytic) scale = std::max(scale, std::fabs(static_cast<double>(g)));
  for (size_t i = 0; i < x.size(); ++i) {
    const float keep = x[i];
    x[i] = keep + static_cast<float>(h);
    const double up = loss(x);
    x[i] = keep - static_cast<float>(h);
    const double down = loss(x);
    x[i] = keep;
    const double numeric = (up - down) / (2 * h);
    if (std::fabs(numeric - analytic[i]) > tol * (1 + scale)) {
      return ::testing::AssertionFailure()
             << "coordinate " << i << ": numeric " << numeric << ", analytic " << analytic[i]
             << " (scale " << scale << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

class GradientOpsTest : public ::testing::Test {
 protected:
  // LinearBackward against Σ_n dy·w (w rounded to each dtype), and against finite
  // differences of Linear in float32.
  void ExpectTransposedProduct(int64_t T, int64_t N, int64_t K);
  std::unique_ptr<Backend> cpu_ = MakeCpuBackend(0, 2);
  GradientOps& grad_ = *cpu_->gradients();
  std::mt19937 rng_{11};
};

TEST_F(GradientOpsTest, LinearIsTheTransposedProductForEveryWeightDtype) {
  // N spans three panels, the last partial; K = 300 spans two column blocks, the last partial.
  for (auto [T, N, K] : {std::tuple<int64_t, int64_t, int64_t>{3, 37, 13}, {2, 21, 300}}) {
    ExpectTransposedProduct(T, N, K);
  }
}

void GradientOpsTest::ExpectTransposedProduct(int64_t T, int64_t N, int64_t K) {
  const Vec w = Random(N * K, rng_), dy = Random(T * N, rng_);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    auto packed = cpu_->AllocateMatrix(dtype, {N, K});
    ASSERT_TRUE(packed.ok());
    cpu_->UploadMatrix(w.data(), packed->view());
    Vec dyc = dy, dx(T * K);
    grad_.LinearBackward(View(dyc, {T, N}), packed->view(), View(dx, {T, K}));
    std::vector<uint16_t> narrow(w.size());
    Vec rounded = w;
    if (dtype != DType::kF32) {
      ConvertFromF32(w.data(), dtype, narrow.data(), w.size());
      ConvertToF32(dtype, narrow.data(), rounded.data(), w.size());
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < K; ++i) {
        double want = 0;
        for (int64_t n = 0; n < N; ++n) want += double{dy[t * N + n]} * rounded[n * K + i];
        EXPECT_NEAR(dx[t * K + i], want, 1e-4) << DTypeName(dtype) << " t " << t << " i " << i;
      }
    }
  }
  // And float32 against finite differences of the forward (no rounding of the input there).
  auto packed = cpu_->AllocateMatrix(DType::kF32, {N, K});
  ASSERT_TRUE(packed.ok());
  cpu_->UploadMatrix(w.data(), packed->view());
  Vec dyc = dy, dx(T * K);
  grad_.LinearBackward(View(dyc, {T, N}), packed->view(), View(dx, {T, K}));
  auto f = [&](const Vec& x) {
    Vec xc = x, y(T * N);
    cpu_->Linear(View(xc, {T, K}), packed->view(), {}, View(y, {T, N}));
    return y;
  };
  EXPECT_TRUE(MatchesFiniteDifferences(f, Random(T * K, rng_), dy, dx, 1e-2));
}

TEST_F(GradientOpsTest, LayerAndRmsNorm) {
  const int64_t T = 4, D = 16;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
    Vec w = Random(D, rng_), x = Random(T * D, rng_, 2.0f), r = Random(T * D, rng_), dx(T * D);
    for (float& v : x) v += 0.5f;  // a mean for LayerNorm to remove
    Vec rc = r;
    grad_.NormBackward(kind, View(x, {T, D}), View(w, {D}), 1e-5f, View(rc, {T, D}),
                       View(dx, {T, D}));
    auto f = [&](const Vec& at) {
      Vec xc = at, y(T * D);
      cpu_->Norm(kind, View(xc, {T, D}), View(w, {D}), {}, 1e-5f, View(y, {T, D}), {}, {});
      return y;
    };
    EXPECT_TRUE(MatchesFiniteDifferences(f, x, r, dx, 1e-2)) << static_cast<int>(kind);
  }
}

TEST_F(GradientOpsTest, PartialRotaryAtSeveralPositionsScaled) {
  const int64_t T = 3, heads = 2, dh = 8;
  const int rotary_dim = 6;
  const int32_t positions[T] = {0, 3, 250};
  Vec inv_freq = {1.0f, 0.1f, 0.01f};
  for (const float scale : {1.0f, 1.6f}) {  // 1.6: longrope's attention factor
    Vec r = Random(T * heads * dh, rng_), dx = r;
    grad_.RopeBackward(View(dx, {T, heads, dh}), View(inv_freq, {3}), rotary_dim, positions, scale);
    auto f = [&](const Vec& at) {
      Vec y = at;
      cpu_->Rope(View(y, {T, heads, dh}), View(inv_freq, {3}), rotary_dim, positions, scale);
      return y;
    };
    EXPECT_TRUE(MatchesFiniteDifferences(f, Random(T * heads * dh, rng_), r, dx, 1e-2)) << scale;
  }
}

TEST_F(GradientOpsTest, ActivationsPlainAndGated) {
  const int64_t n = 64;
  for (ActKind kind : {ActKind::kGeluTanh, ActKind::kGeluErf, ActKind::kSilu, ActKind::kRelu}) {
    Vec x = Random(n, rng_, 2.0f), up = Random(n, rng_), r = Random(n, rng_);
    for (float& v : x) {
      if (std::fabs(v) < 0.05f) v = 0.3f;  // ReLU's kink is not differentiable
    }
    Vec dx(n), dgate(n), dup(n);
    grad_.ActivationBackward(kind, View(x, {n}), View(r, {n}), View(dx, {n}));
    auto act = [&](const Vec& at) {
      Vec xc = at, y(n);
      cpu_->Activation(kind, View(xc, {n}), View(y, {n}));
      return y;
    };
    EXPECT_TRUE(MatchesFiniteDifferences(act, x, r, dx, 1e-2)) << static_cast<int>(kind);
    grad_.GatedActivationBackward(kind, View(x, {n}), View(up, {n}), View(r, {n}), View(dgate, {n}),
                                  View(dup, {n}));
    auto by_gate = [&](const Vec& at) {
      Vec g = at, y(n);
      cpu_->GatedActivation(kind, View(g, {n}), View(up, {n}), View(y, {n}));
      return y;
    };
    auto by_up = [&](const Vec& at) {
      Vec u = at, y(n);
      cpu_->GatedActivation(kind, View(x, {n}), View(u, {n}), View(y, {n}));
      return y;
    };
    EXPECT_TRUE(MatchesFiniteDifferences(by_gate, x, r, dgate, 1e-2)) << static_cast<int>(kind);
    EXPECT_TRUE(MatchesFiniteDifferences(by_up, up, r, dup, 1e-2)) << static_cast<int>(kind);
  }
}

TEST_F(GradientOpsTest, ScaleAndSoftcap) {
  const int64_t n = 32;
  for (float cap : {0.0f, 5.0f}) {
    Vec x = Random(n, rng_, 2.0f), r = Random(n, rng_);
    Vec y = x;
    cpu_->ScaleAndCap(View(y, {n}), 3.0f, cap);
    Vec dx = r;
    grad_.ScaleAndCapBackward(View(y, {n}), 3.0f, cap, View(dx, {n}));
    auto f = [&](const Vec& at) {
      Vec v = at;
      cpu_->ScaleAndCap(View(v, {n}), 3.0f, cap);
      return v;
    };
    EXPECT_TRUE(MatchesFiniteDifferences(f, x, r, dx, 1e-2)) << cap;
  }
}

// Attention of whole sequences through the forward op: k and v written to a pool with one
// slot per row (block size 1, identity block tables).
class AttentionGradTest : public GradientOpsTest {
 protected:
  static constexpr int64_t H = 4, Hkv = 2, dh = 8;
  Vec Forward(const Vec& q, const Vec& k, const Vec& v, const std::vector<SeqRows>& seqs,
              const AttentionParams& params) {
    const int64_t T = static_cast<int64_t>(q.size()) / (H * dh);
    Vec kp(T * Hkv * dh), vp(T * Hkv * dh), qc = q, kc = k, vc = v, z(T * H * dh);
    std::vector<int32_t> slots(T);
    for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>(t);
    KvLayerView kv{View(kp, {T, Hkv, dh}), View(vp, {T, Hkv, dh}), 1};
    cpu_->WriteKv(View(kc, {T, Hkv, dh}), View(vc, {T, Hkv, dh}), slots.data(), kv);
    std::vector<AttentionSeq> a;
    for (const SeqRows& s : seqs) a.push_back({s.begin, s.n, 0, slots.data() + s.begin, {}, {}});
    cpu_->Attention(View(qc, {T, H, dh}), kv, a, params, View(z, {T, H, dh}));
    return z;
  }
  struct Grads {
    Vec dq, dk, dv;
  };
  Grads Backward(GradientOps& g, Vec q, Vec k, Vec v, const std::vector<SeqRows>& seqs,
                 const AttentionParams& params, Vec dz) {
    const int64_t T = static_cast<int64_t>(q.size()) / (H * dh);
    Grads out{Vec(q.size()), Vec(k.size()), Vec(v.size())};
    g.AttentionBackward(View(q, {T, H, dh}), View(k, {T, Hkv, dh}), View(v, {T, Hkv, dh}), seqs,
                        params, View(dz, {T, H, dh}), View(out.dq, {T, H, dh}),
                        View(out.dk, {T, Hkv, dh}), View(out.dv, {T, Hkv, dh}));
    return out;
  }
};

TEST_F(AttentionGradTest, CausalWindowedSoftcappedGroupedQueries) {
  const std::vector<SeqRows> seqs = {{0, 5}, {5, 7}};
  const int64_t T = 12;
  for (AttentionParams params : {AttentionParams{0.35f, 0, 0.0f}, AttentionParams{0.35f, 3, 0.0f},
                                 AttentionParams{0.35f, 0, 2.0f}}) {
    const Vec q = Random(T * H * dh, rng_), k = Random(T * Hkv * dh, rng_),
              v = Random(T * Hkv * dh, rng_), r = Random(T * H * dh, rng_);
    const Grads g = Backward(grad_, q, k, v, seqs, params, r);
    const std::string what =
        "window " + std::to_string(params.window) + " softcap " + std::to_string(params.softcap);
    EXPECT_TRUE(MatchesFiniteDifferences(
        [&](const Vec& at) { return Forward(at, k, v, seqs, params); }, q, r, g.dq, 1e-2))
        << "dq, " << what;
    EXPECT_TRUE(MatchesFiniteDifferences(
        [&](const Vec& at) { return Forward(q, at, v, seqs, params); }, k, r, g.dk, 1e-2))
        << "dk, " << what;
    EXPECT_TRUE(MatchesFiniteDifferences(
        [&](const Vec& at) { return Forward(q, k, at, seqs, params); }, v, r, g.dv, 1e-2))
        << "dv, " << what;
  }
}

TEST_F(AttentionGradTest, ASequenceGetsTheSameBitsAloneBatchedAndAtAnyThreadCount) {
  const AttentionParams params{0.35f, 4, 0.0f};
  const int64_t n = 9, T = 3 + n;
  const Vec q = Random(T * H * dh, rng_), k = Random(T * Hkv * dh, rng_),
            v = Random(T * Hkv * dh, rng_), dz = Random(T * H * dh, rng_);
  auto tail = [&](const Vec& all, int64_t width) {
    return Vec(all.begin() + 3 * width, all.end());
  };
  const Grads batched = Backward(grad_, q, k, v, {{0, 3}, {3, static_cast<int>(n)}}, params, dz);
  auto one = MakeCpuBackend(0, 1);
  const Grads alone =
      Backward(*one->gradients(), tail(q, H * dh), tail(k, Hkv * dh), tail(v, Hkv * dh),
               {{0, static_cast<int>(n)}}, params, tail(dz, H * dh));
  EXPECT_EQ(tail(batched.dq, H * dh), alone.dq);
  EXPECT_EQ(tail(batched.dk, Hkv * dh), alone.dk);
  EXPECT_EQ(tail(batched.dv, Hkv * dh), alone.dv);
}

}  // namespace
}  // namespace lensd
