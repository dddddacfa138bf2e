// The CPU backend's elementwise and attention building blocks at one instruction-set level
// (vec_kernels.h instantiated): scalar and AVX2 give the same bits; AVX-512 CPUs use AVX2.
#ifndef LENSD_ENGINE_CPU_VEC_OPS_H_
#define LENSD_ENGINE_CPU_VEC_OPS_H_

#include <cstdint>

#include "engine/cpu/gemm.h"

namespace lensd {

struct VecOps {
  // y = act(x) (· up when up is non-null); kind as ActKind.
  void (*activation)(int kind, const float* x, const float* up, float* y, int64_t n);
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float a, const float* x, float* y, int64_t n);  // y += a x
  // p = exp(p − max) with −inf giving 0; returns Σ p.
  float (*exp_shift_sum)(float* p, float max, int64_t n);
  // dst = src widened exactly to float32; `f16` chooses float16, else bfloat16.
  void (*widen)(bool f16, const uint16_t* src, float* dst, int64_t n);
};

const VecOps& ScalarVecOps();
const VecOps& Avx2VecOps();
const VecOps& VecOpsFor(SimdLevel level);

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_VEC_OPS_H_
