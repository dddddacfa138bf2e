// Eight-lane float vectors for the CPU backend's elementwise and attention kernels, as a
// policy over which the kernels (vec_kernels.h) are written once: Avx2Simd (__m256, compiled
// only into vec_kernels_avx2.cc) and ScalarSimd (a plain array, whose every operation is the
// same IEEE operation lane by lane: std::fma for fused multiply-add). Both therefore give the
// same bits for the same inputs.
#ifndef LENSD_ENGINE_CPU_SIMD_H_
#define LENSD_ENGINE_CPU_SIMD_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace lensd {

struct ScalarSimd {
  float v[8];
  static ScalarSimd Set1(float x) {
    ScalarSimd r;
    for (float& e : r.v) e = x;
    return r;
  }
  static ScalarSimd Load(const float* p, int n = 8) {  // lanes >= n are 0
    ScalarSimd r = Set1(0.0f);
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  void Store(float* p, int n = 8) const {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  template <typename F>
  static ScalarSimd Map(const ScalarSimd& a, const ScalarSimd& b, F f) {
    ScalarSimd r;
    for (int i = 0; i < 8; ++i) r.v[i] = f(a.v[i], b.v[i]);
    return r;
  }
  friend ScalarSimd operator+(ScalarSimd a, ScalarSimd b) { return Map(a, b, [](float x, float y) { return x + y; }); }
  friend ScalarSimd operator-(ScalarSimd a, ScalarSimd b) { return Map(a, b, [](float x, float y) { return x - y; }); }
  friend ScalarSimd operator*(ScalarSimd a, ScalarSimd b) { return Map(a, b, [](float x, float y) { return x * y; }); }
  friend ScalarSimd operator/(ScalarSimd a, ScalarSimd b) { return Map(a, b, [](float x, float y) { return x / y; }); }
  static ScalarSimd Max(ScalarSimd a, ScalarSimd b) { return Map(a, b, [](float x, float y) { return x > y ? x : y; }); }
  static ScalarSimd Min(ScalarSimd a, ScalarSimd b) { return Map(a, b, [](float x, float y) { return x < y ? x : y; }); }
  static ScalarSimd Fma(ScalarSimd a, ScalarSimd b, ScalarSimd c) {  // a * b + c, fused
    ScalarSimd r;
    for (int i = 0; i < 8; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return r;
  }
  static ScalarSimd Round(ScalarSimd a) {  // to nearest, ties to even
    ScalarSimd r;
    for (int i = 0; i < 8; ++i) r.v[i] = std::nearbyint(a.v[i]);
    return r;
  }
  // 2^n for integral n in [-127, 127] (n = -127 gives 0), by building the exponent bits.
  static ScalarSimd Pow2(ScalarSimd n) {
    ScalarSimd r;
    for (int i = 0; i < 8; ++i) {
      const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n.v[i]) + 127) << 23;
      std::memcpy(&r.v[i], &bits, 4);
    }
    return r;
  }
  static ScalarSimd Abs(ScalarSimd a) {
    ScalarSimd r;
    for (int i = 0; i < 8; ++i) r.v[i] = std::fabs(a.v[i]);
    return r;
  }
  // |a| with the sign of s.
  static ScalarSimd CopySign(ScalarSimd a, ScalarSimd s) { return Map(a, s, [](float x, float y) { return std::copysign(x, y); }); }
  // `value` where `score` is not −inf, else 0.
  static ScalarSimd ZeroWhereNegInf(ScalarSimd score, ScalarSimd value) {
    return Map(score, value, [](float s, float x) { return s == -INFINITY ? 0.0f : x; });
  }
  float Lane(int i) const { return v[i]; }
};

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2Simd {
  __m256 v;
  static Avx2Simd Set1(float x) { return {_mm256_set1_ps(x)}; }
  static __m256i Mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Avx2Simd Load(const float* p, int n = 8) {
    return {n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, Mask(n))};
  }
  void Store(float* p, int n = 8) const {
    if (n == 8) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, Mask(n), v);
    }
  }
  friend Avx2Simd operator+(Avx2Simd a, Avx2Simd b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend Avx2Simd operator-(Avx2Simd a, Avx2Simd b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend Avx2Simd operator*(Avx2Simd a, Avx2Simd b) { return {_mm256_mul_ps(a.v, b.v)}; }
  friend Avx2Simd operator/(Avx2Simd a, Avx2Simd b) { return {_mm256_div_ps(a.v, b.v)}; }
  // max/min as the scalar ternaries: the second operand when the comparison is false (NaN).
  static Avx2Simd Max(Avx2Simd a, Avx2Simd b) {
    return {_mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ))};
  }
  static Avx2Simd Min(Avx2Simd a, Avx2Simd b) {
    return {_mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ))};
  }
  static Avx2Simd Fma(Avx2Simd a, Avx2Simd b, Avx2Simd c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static Avx2Simd Round(Avx2Simd a) {
    return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  static Avx2Simd Pow2(Avx2Simd n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
  }
  static Avx2Simd Abs(Avx2Simd a) {
    return {_mm256_and_ps(a.v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))};
  }
  static Avx2Simd CopySign(Avx2Simd a, Avx2Simd s) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
    return {_mm256_or_ps(_mm256_andnot_ps(sign, a.v), _mm256_and_ps(sign, s.v))};
  }
  static Avx2Simd ZeroWhereNegInf(Avx2Simd score, Avx2Simd value) {
    return {_mm256_andnot_ps(_mm256_cmp_ps(score.v, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ), value.v)};
  }
  float Lane(int i) const {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    return tmp[i];
  }
};
#endif

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_SIMD_H_
