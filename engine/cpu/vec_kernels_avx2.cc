// vec_kernels.h on Avx2Simd. Compiled with -mavx2 -mfma; used only on CPUs with them.
#include <immintrin.h>

#include "engine/core/dtype.h"
#include "engine/cpu/simd.h"
#include "engine/cpu/vec_kernels.h"
#include "engine/cpu/vec_ops.h"

namespace lensd {
namespace {

// Eight at a time (F16C for float16, a shift for bfloat16); conversions are exact.
void Widen(bool f16, const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, f16 ? _mm256_cvtph_ps(h)
                                  : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  ConvertToF32(f16 ? DType::kF16 : DType::kBF16, src + i, dst + i, static_cast<size_t>(n - i));
}

}  // namespace

const VecOps& Avx2VecOps() {
  static const VecOps ops = {&vec::ActivationT<Avx2Simd>, &vec::DotT<Avx2Simd>,
                             &vec::AxpyT<Avx2Simd>, &vec::ExpShiftSumT<Avx2Simd>, &Widen};
  return ops;
}

}  // namespace lensd
