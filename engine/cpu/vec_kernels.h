// Elementwise and attention kernels written once over an eight-lane vector policy V (simd.h):
// instantiated for ScalarSimd in vec_kernels_scalar.cc and for Avx2Simd in
// vec_kernels_avx2.cc, they compute the same bits. Everything here is a template on V (no
// plain inline functions), so the AVX2 translation unit never provides code that a
// non-AVX2 CPU could end up running.
#ifndef LENSD_ENGINE_CPU_VEC_KERNELS_H_
#define LENSD_ENGINE_CPU_VEC_KERNELS_H_

#include <cstdint>


namespace lensd::vec {

// exp(x): Cody–Waite reduction by ln 2 and a degree-6 polynomial (Cephes expf, ~1 ulp);
// inputs clamped to [-87.3, 88.7] (the smallest result is about 1.2e-38, never a denormal).
template <typename V>
V Exp(V x) {
  x = V::Min(V::Max(x, V::Set1(-87.33654f)), V::Set1(88.72283f));
  const V n = V::Round(x * V::Set1(1.44269504088896341f));
  x = V::Fma(n, V::Set1(-0.693359375f), x);
  x = V::Fma(n, V::Set1(2.12194440e-4f), x);
  V p = V::Set1(1.9875691500e-4f);
  p = V::Fma(p, x, V::Set1(1.3981999507e-3f));
  p = V::Fma(p, x, V::Set1(8.3334519073e-3f));
  p = V::Fma(p, x, V::Set1(4.1665795894e-2f));
  p = V::Fma(p, x, V::Set1(1.6666665459e-1f));
  p = V::Fma(p, x, V::Set1(5.0000001201e-1f));
  p = V::Fma(p, x * x, x) + V::Set1(1.0f);
  return p * V::Pow2(n);
}

// tanh(x) = sign(x) (1 − 2 / (exp(2|x|) + 1)).
template <typename V>
V Tanh(V x) {
  const V e = Exp(V::Abs(x) * V::Set1(2.0f));
  return V::CopySign(V::Set1(1.0f) - V::Set1(2.0f) / (e + V::Set1(1.0f)), x);
}

// erf(x), Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
template <typename V>
V Erf(V x) {
  const V a = V::Abs(x);
  const V t = V::Set1(1.0f) / V::Fma(a, V::Set1(0.3275911f), V::Set1(1.0f));
  V p = V::Set1(1.061405429f);
  p = V::Fma(p, t, V::Set1(-1.453152027f));
  p = V::Fma(p, t, V::Set1(1.421413741f));
  p = V::Fma(p, t, V::Set1(-0.284496736f));
  p = V::Fma(p, t, V::Set1(0.254829592f));
  const V y = V::Set1(1.0f) - p * t * Exp(V::Set1(0.0f) - a * a);
  return V::CopySign(y, x);
}

// ActKind order: 0 GELU-tanh, 1 GELU-erf, 2 SiLU, 3 ReLU.
template <typename V>
V Act(int kind, V x) {
  switch (kind) {
    case 0: {
      const V inner = V::Set1(0.7978845608028654f) * V::Fma(V::Set1(0.044715f) * x * x, x, x);
      return V::Set1(0.5f) * x * (V::Set1(1.0f) + Tanh(inner));
    }
    case 1:
      return V::Set1(0.5f) * x * (V::Set1(1.0f) + Erf(x * V::Set1(0.7071067811865476f)));
    case 2:
      return x / (V::Set1(1.0f) + Exp(V::Set1(0.0f) - x));
    default:
      return V::Max(x, V::Set1(0.0f));
  }
}

template <typename V>
void ActivationT(int kind, const float* x, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    const int m = n - i < 8 ? static_cast<int>(n - i) : 8;
    V v = Act(kind, V::Load(x + i, m));
    if (up != nullptr) v = v * V::Load(up + i, m);
    v.Store(y + i, m);
  }
}

// Σ a[i] b[i]: eight lanes of fused chains (lane l takes i ≡ l mod 8, the tail zero-padded),
// then a fixed pairwise sum of the lanes.
template <typename V>
float DotT(const float* a, const float* b, int64_t n) {
  V acc = V::Set1(0.0f);
  for (int64_t i = 0; i < n; i += 8) {
    const int m = n - i < 8 ? static_cast<int>(n - i) : 8;
    acc = V::Fma(V::Load(a + i, m), V::Load(b + i, m), acc);
  }
  return ((acc.Lane(0) + acc.Lane(4)) + (acc.Lane(2) + acc.Lane(6))) +
         ((acc.Lane(1) + acc.Lane(5)) + (acc.Lane(3) + acc.Lane(7)));
}

// y[i] += a x[i], fused.
template <typename V>
void AxpyT(float a, const float* x, float* y, int64_t n) {
  const V av = V::Set1(a);
  for (int64_t i = 0; i < n; i += 8) {
    const int m = n - i < 8 ? static_cast<int>(n - i) : 8;
    V::Fma(av, V::Load(x + i, m), V::Load(y + i, m)).Store(y + i, m);
  }
}

// p[i] = exp(p[i] − max) (masked scores, −inf, give exactly 0); returns Σ p in eight lanes
// summed pairwise.
template <typename V>
float ExpShiftSumT(float* p, float max, int64_t n) {
  V sum = V::Set1(0.0f);
  const V shift = V::Set1(max);
  for (int64_t i = 0; i < n; i += 8) {
    const int m = n - i < 8 ? static_cast<int>(n - i) : 8;
    const V s = V::Load(p + i, m);
    const V e = V::ZeroWhereNegInf(s, Exp(s - shift));
    e.Store(p + i, m);
    sum = sum + (m == 8 ? e : V::Load(p + i, m));  // the padded lanes add 0
  }
  return ((sum.Lane(0) + sum.Lane(4)) + (sum.Lane(2) + sum.Lane(6))) +
         ((sum.Lane(1) + sum.Lane(5)) + (sum.Lane(3) + sum.Lane(7)));
}

}  // namespace lensd::vec

#endif  // LENSD_ENGINE_CPU_VEC_KERNELS_H_
