// The CPU backend's GEMM: y[T, N] = x[T, K] · Wᵀ (+ bias) on weights packed once at load.
//
// Batch invariance by construction: every y[t][n] is one fused multiply-add chain over k in a
// fixed order, starting from 0, then + bias. The chain never depends on T, on where row t
// sits in the batch, on the thread count (threads split panels of columns, never k) or on the
// instruction set — AVX-512, AVX2 and scalar fmaf give the same bits, tested by running each
// level explicitly. Libraries do not promise that (OpenBLAS, BLIS, Eigen and oneDNN all
// change kernels with the row count).
//
// Layouts, in panels of kPanel = 16 output columns (the last zero-padded):
//   float32:  panel p = [K][16]  floats, W[16p + j][k] at [k][j]
//   float16:  panel p = [K][16]  halves, same order, widened to float32 in registers
//   bfloat16: panel p = [K/2][16][2] (K padded to even), the pairs (k = 2i, 2i+1) of one
//             column adjacent, as vdpbf16ps and AMX tiles read them. Each pair accumulates
//             odd then even, with denormals flushed (FTZ/DAZ): exactly vdpbf16ps.
#ifndef LENSD_ENGINE_CPU_GEMM_H_
#define LENSD_ENGINE_CPU_GEMM_H_

#include <cstdint>
#include <string>

#include "engine/core/dtype.h"

namespace lensd {

inline constexpr int64_t kPanel = 16;

// Instruction-set levels of the kernels, lowest first.
enum class SimdLevel { kScalar, kAvx2, kAvx512 };

// What this CPU runs: the highest level it supports, capped by $LENSD_CPU_KERNELS
// ("scalar", "avx2", "avx512") when set. Fixed for the process.
SimdLevel DetectSimdLevel();
// bfloat16 dot products in hardware (AVX512_BF16) at this level.
bool HasAvx512Bf16();
std::string SimdLevelName(SimdLevel level);
// The kernel families in use for float32 and for bfloat16/float16 weights, e.g.
// "float32: avx2-fma; bfloat16: avx2-widen; float16: avx2-f16c" (reported by GetModelInfo).
std::string KernelFamilies(SimdLevel level);

// K as packed for `dtype` (bfloat16: rounded up to even).
int64_t PackedK(DType dtype, int64_t k);
// Bytes of the packed form of an [n, k] matrix.
int64_t PackedBytes(DType dtype, int64_t n, int64_t k);
// Packs float32 W [n, k] (row-major) into `out` (PackedBytes of `dtype`), rounding to dtype.
void PackMatrix(const float* w, int64_t n, int64_t k, DType dtype, void* out);
// The element index of W[p·kPanel + j, i] in the packed form (`kp`: PackedK): float32 and
// float16 [p][k][j]; bfloat16 [p][k / 2][j][k % 2].
inline int64_t PackedIndex(DType dtype, int64_t kp, int64_t p, int64_t j, int64_t i) {
  return dtype == DType::kBF16 ? (p * kp + i / 2 * 2) * kPanel + j * 2 + i % 2
                               : (p * kp + i) * kPanel + j;
}

struct GemmProblem {
  const float* x = nullptr;  // [T, ldx]; bfloat16 weights: rounded, zero-padded to PackedK
  int64_t T = 0, ldx = 0;
  const void* w = nullptr;   // packed
  DType dtype = DType::kF32;
  int64_t k = 0;             // PackedK
  int64_t n = 0;
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;           // [T, n]
};

// Columns of panels [p0, p1) of every row, at `level` (which the CPU must support).
void GemmPanels(const GemmProblem& g, int64_t p0, int64_t p1, SimdLevel level);

// The per-level kernels (gemm_scalar.cc, gemm_avx2.cc, gemm_avx512.cc).
void GemmPanelsScalar(const GemmProblem& g, int64_t p0, int64_t p1);
void GemmPanelsAvx2(const GemmProblem& g, int64_t p0, int64_t p1);
void GemmPanelsAvx512(const GemmProblem& g, int64_t p0, int64_t p1);

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_GEMM_H_
