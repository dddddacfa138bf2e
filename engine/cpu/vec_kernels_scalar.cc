// vec_kernels.h on ScalarSimd: the reference of the AVX2 instantiation.
#include "engine/core/dtype.h"
#include "engine/cpu/simd.h"
#include "engine/cpu/vec_kernels.h"
#include "engine/cpu/vec_ops.h"

namespace lensd {
namespace {

void Widen(bool f16, const uint16_t* src, float* dst, int64_t n) {
  ConvertToF32(f16 ? DType::kF16 : DType::kBF16, src, dst, static_cast<size_t>(n));
}

}  // namespace

const VecOps& ScalarVecOps() {
  static const VecOps ops = {&vec::ActivationT<ScalarSimd>, &vec::DotT<ScalarSimd>,
                             &vec::AxpyT<ScalarSimd>, &vec::ExpShiftSumT<ScalarSimd>, &Widen};
  return ops;
}

const VecOps& VecOpsFor(SimdLevel level) {
  return level == SimdLevel::kScalar ? ScalarVecOps() : Avx2VecOps();
}

}  // namespace lensd
