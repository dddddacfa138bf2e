// vec_kernels.h on Avx2Simd. Compiled with -mavx2 -mfma; used only on CPUs with them.
#include "engine/cpu/simd.h"
#include "engine/cpu/vec_kernels.h"
#include "engine/cpu/vec_ops.h"

namespace lensd {

const VecOps& Avx2VecOps() {
  static const VecOps ops = {&vec::ActivationT<Avx2Simd>, &vec::DotT<Avx2Simd>,
                             &vec::AxpyT<Avx2Simd>, &vec::ExpShiftSumT<Avx2Simd>};
  return ops;
}

}  // namespace lensd
