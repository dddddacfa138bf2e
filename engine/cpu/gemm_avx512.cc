// AVX-512F GEMM kernels (bfloat16 through vdpbf16ps when the CPU has AVX512_BF16, else by
// widening). Compiled with -mavx512f -mavx512bf16 -mfma -mf16c; called only on CPUs with
// AVX-512F (and the dot-product path only with AVX512_BF16). One zmm holds a 16-column
// panel's row: tiles of up to 8 rows; single-row problems stream 4 panels. Same bits as
// GemmPanelsScalar.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "engine/cpu/gemm.h"

namespace lensd {
namespace {

__mmask16 Mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff)
                 : static_cast<__mmask16>((1u << (n < 0 ? 0 : n)) - 1);
}

inline void StoreRow(__m512 a, const float* bias, float* y, int64_t cols) {
  const __mmask16 m = Mask(cols);
  if (bias != nullptr) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, bias));
  _mm512_mask_storeu_ps(y, m, a);
}

struct F32Weights {
  static __m512 Load(const void* panel, int64_t k) {
    return _mm512_load_ps(static_cast<const float*>(panel) + k * kPanel);
  }
};
struct F16Weights {
  static __m512 Load(const void* panel, int64_t k) {
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(panel) + k * kPanel)));
  }
};
// bfloat16 widened: the (even, odd) pairs of a 32-bit lane, odd first (vdpbf16ps order).
struct Bf16Pair {
  __m512 odd, even;
  static Bf16Pair Load(const void* panel, int64_t k) {
    const __m512i v = _mm512_load_si512(static_cast<const uint16_t*>(panel) + k * kPanel);
    return {_mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u)))),
            _mm512_castsi512_ps(_mm512_slli_epi32(v, 16))};
  }
};

template <typename W, int R>
void FloatTile(const GemmProblem& g, const void* panel, int64_t t0, int64_t p) {
  __m512 a[R];
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
  const float* x = g.x + t0 * g.ldx;
  const int64_t ldx = g.ldx, K = g.k;
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w = W::Load(panel, k);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) a[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + k]), w, a[r]);
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    StoreRow(a[r], g.bias != nullptr ? g.bias + p * kPanel : nullptr,
             g.y + (t0 + r) * g.n + p * kPanel, g.n - p * kPanel);
  }
}

template <int R>
void Bf16WidenTile(const GemmProblem& g, const void* panel, int64_t t0, int64_t p) {
  __m512 a[R];
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
  const float* x = g.x + t0 * g.ldx;
  const int64_t ldx = g.ldx, K = g.k;
  for (int64_t k = 0; k < K; k += 2) {
    const Bf16Pair w = Bf16Pair::Load(panel, k);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      a[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + k + 1]), w.odd, a[r]);
      a[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + k]), w.even, a[r]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    StoreRow(a[r], g.bias != nullptr ? g.bias + p * kPanel : nullptr,
             g.y + (t0 + r) * g.n + p * kPanel, g.n - p * kPanel);
  }
}

// x[k], x[k + 1] (already bfloat16 values) as one 32-bit (even, odd) pair.
inline int PairBits(const float* x) {
  uint32_t even, odd;
  std::memcpy(&even, x, 4);
  std::memcpy(&odd, x + 1, 4);
  return static_cast<int>((odd & 0xffff0000u) | (even >> 16));
}

template <int R>
__attribute__((target("avx512bf16"))) void Bf16DotTile(const GemmProblem& g, const void* panel,
                                                       int64_t t0, int64_t p) {
  __m512 a[R];
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
  const float* x = g.x + t0 * g.ldx;
  const int64_t ldx = g.ldx, K = g.k;
  const uint16_t* w = static_cast<const uint16_t*>(panel);
  for (int64_t k = 0; k < K; k += 2, w += 2 * kPanel) {
    const __m512bh wv = (__m512bh)_mm512_load_si512(w);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)_mm512_set1_epi32(PairBits(x + r * ldx + k)), wv);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    StoreRow(a[r], g.bias != nullptr ? g.bias + p * kPanel : nullptr,
             g.y + (t0 + r) * g.n + p * kPanel, g.n - p * kPanel);
  }
}

template <typename W, int NP>
void FloatRow(const GemmProblem& g, int64_t p) {
  const size_t panel_bytes = kPanel * g.k * DTypeSize(g.dtype);
  const char* base = static_cast<const char*>(g.w) + p * panel_bytes;
  __m512 a[NP];
  #pragma GCC unroll 16
  for (int i = 0; i < NP; ++i) a[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < g.k; ++k) {
    const __m512 xv = _mm512_set1_ps(g.x[k]);
    #pragma GCC unroll 16
    for (int i = 0; i < NP; ++i) a[i] = _mm512_fmadd_ps(xv, W::Load(base + i * panel_bytes, k), a[i]);
  }
  #pragma GCC unroll 16
  for (int i = 0; i < NP; ++i) {
    const int64_t col = (p + i) * kPanel;
    StoreRow(a[i], g.bias != nullptr ? g.bias + col : nullptr, g.y + col, g.n - col);
  }
}

// Every panel of [p0, p1) by `Tile<R>` in row tiles of up to 8.
template <template <int> class Tile>
void Tiled(const GemmProblem& g, int64_t p0, int64_t p1) {
  const size_t panel_bytes = kPanel * g.k * DTypeSize(g.dtype);
  for (int64_t p = p0; p < p1; ++p) {
    const void* panel = static_cast<const char*>(g.w) + p * panel_bytes;
    int64_t t = 0;
    for (; t + 8 <= g.T; t += 8) Tile<8>::Run(g, panel, t, p);
    switch (g.T - t) {
      case 7: Tile<7>::Run(g, panel, t, p); break;
      case 6: Tile<6>::Run(g, panel, t, p); break;
      case 5: Tile<5>::Run(g, panel, t, p); break;
      case 4: Tile<4>::Run(g, panel, t, p); break;
      case 3: Tile<3>::Run(g, panel, t, p); break;
      case 2: Tile<2>::Run(g, panel, t, p); break;
      case 1: Tile<1>::Run(g, panel, t, p); break;
      default: break;
    }
  }
}

template <int R> struct F32Tile { static void Run(const GemmProblem& g, const void* w, int64_t t, int64_t p) { FloatTile<F32Weights, R>(g, w, t, p); } };
template <int R> struct F16Tile { static void Run(const GemmProblem& g, const void* w, int64_t t, int64_t p) { FloatTile<F16Weights, R>(g, w, t, p); } };
template <int R> struct Bf16Widen { static void Run(const GemmProblem& g, const void* w, int64_t t, int64_t p) { Bf16WidenTile<R>(g, w, t, p); } };
template <int R> struct Bf16Dot { static void Run(const GemmProblem& g, const void* w, int64_t t, int64_t p) { Bf16DotTile<R>(g, w, t, p); } };

template <typename W, template <int> class Tile>
void FloatPanels(const GemmProblem& g, int64_t p0, int64_t p1) {
  if (g.T != 1) return Tiled<Tile>(g, p0, p1);
  int64_t p = p0;
  for (; p + 4 <= p1; p += 4) FloatRow<W, 4>(g, p);
  for (; p < p1; ++p) FloatRow<W, 1>(g, p);
}

}  // namespace

void GemmPanelsAvx512(const GemmProblem& g, int64_t p0, int64_t p1) {
  switch (g.dtype) {
    case DType::kF32: return FloatPanels<F32Weights, F32Tile>(g, p0, p1);
    case DType::kF16: return FloatPanels<F16Weights, F16Tile>(g, p0, p1);
    case DType::kBF16: {
      const unsigned csr = _mm_getcsr();
      _mm_setcsr(csr | 0x8040);  // FTZ | DAZ: the widening path flushes as vdpbf16ps does
      if (HasAvx512Bf16()) {
        Tiled<Bf16Dot>(g, p0, p1);
      } else {
        Tiled<Bf16Widen>(g, p0, p1);
      }
      _mm_setcsr(csr);
      return;
    }
    case DType::kI32: return;
  }
}

}  // namespace lensd
