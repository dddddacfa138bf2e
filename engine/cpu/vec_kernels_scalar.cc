// vec_kernels.h on ScalarSimd: the reference of the AVX2 instantiation.
#include "engine/cpu/simd.h"
#include "engine/cpu/vec_kernels.h"
#include "engine/cpu/vec_ops.h"

namespace lensd {

const VecOps& ScalarVecOps() {
  static const VecOps ops = {&vec::ActivationT<ScalarSimd>, &vec::DotT<ScalarSimd>,
                             &vec::AxpyT<ScalarSimd>, &vec::ExpShiftSumT<ScalarSimd>};
  return ops;
}

const VecOps& VecOpsFor(SimdLevel level) {
  return level == SimdLevel::kScalar ? ScalarVecOps() : Avx2VecOps();
}

}  // namespace lensd
