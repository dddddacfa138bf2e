// AVX2 + FMA (+ F16C) GEMM kernels. Compiled with -mavx2 -mfma -mf16c; called only on CPUs
// that have them. Tiles of up to 6 rows × one 16-column panel (12 accumulators); single-row
// problems (decode) stream 4 panels at once. Same bits as GemmPanelsScalar.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "engine/cpu/gemm.h"

namespace lensd {
namespace {

// Lanes [0, n) of 8 set.
__m256i Mask(int64_t n) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 0 ? 0 : n)), lanes);
}

// Blocks of k per pass over a panel: the panel's slice (16 KiB of float32) and the row
// tile's stay in L1 while every row tile of the panel uses them. Between blocks the partial
// sums wait in y as floats, so the chain of each output is the same (exact round trip).
constexpr int64_t kBlockK = 256;

// The accumulators of a tile row: zero at the first block of k, else the partial sums in y.
inline void LoadRow(const float* y, int64_t cols, bool first, __m256& a0, __m256& a1) {
  if (first) {
    a0 = a1 = _mm256_setzero_ps();
  } else {
    a0 = _mm256_maskload_ps(y, Mask(cols)), a1 = _mm256_maskload_ps(y + 8, Mask(cols - 8));
  }
}

// Stores a tile row's 16 columns (`cols` valid), adding the bias after the last block of k.
inline void StoreRow(__m256 a0, __m256 a1, const float* bias, float* y, int64_t cols) {
  const __m256i m0 = Mask(cols), m1 = Mask(cols - 8);
  if (bias != nullptr) {
    a0 = _mm256_add_ps(a0, _mm256_maskload_ps(bias, m0));
    a1 = _mm256_add_ps(a1, _mm256_maskload_ps(bias + 8, m1));
  }
  _mm256_maskstore_ps(y, m0, a0);
  _mm256_maskstore_ps(y + 8, m1, a1);
}

// Where tile rows [t0, t0 + R) of panel p go, over k in [k0, k1).
struct TileAt {
  int64_t t0, p, k0, k1;
};

// Weights of one k (or k pair) for 16 columns as two float32 vectors each.
struct F32Weights {
  static constexpr int kStep = 1;
  static void Load(const void* panel, int64_t k, __m256* w) {
    const float* p = static_cast<const float*>(panel) + k * kPanel;
    w[0] = _mm256_load_ps(p), w[1] = _mm256_load_ps(p + 8);
  }
};
struct F16Weights {
  static constexpr int kStep = 1;
  static void Load(const void* panel, int64_t k, __m256* w) {
    const uint16_t* p = static_cast<const uint16_t*>(panel) + k * kPanel;
    w[0] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    w[1] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
};

template <typename W, int R>
void FloatTile(const GemmProblem& g, const void* panel, TileAt at) {
  const int64_t ldx = g.ldx, n = g.n, cols = g.n - at.p * kPanel;
  float* y = g.y + at.t0 * n + at.p * kPanel;
  __m256 a0[R], a1[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) LoadRow(y + r * n, cols, at.k0 == 0, a0[r], a1[r]);
  const float* x = g.x + at.t0 * ldx;
  for (int64_t k = at.k0; k < at.k1; ++k) {
    __m256 w[2];
    W::Load(panel, k, w);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * ldx + k);
      a0[r] = _mm256_fmadd_ps(xv, w[0], a0[r]);
      a1[r] = _mm256_fmadd_ps(xv, w[1], a1[r]);
    }
  }
  const float* bias = g.bias != nullptr && at.k1 == g.k ? g.bias + at.p * kPanel : nullptr;
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) StoreRow(a0[r], a1[r], bias, y + r * n, cols);
}

// bfloat16 pairs: lane j of a 32-bit load holds column j's (even, odd) k; odd first.
template <int R>
void Bf16Tile(const GemmProblem& g, const void* panel, TileAt at) {
  const int64_t ldx = g.ldx, n = g.n, cols = g.n - at.p * kPanel;
  float* y = g.y + at.t0 * n + at.p * kPanel;
  __m256 a0[R], a1[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) LoadRow(y + r * n, cols, at.k0 == 0, a0[r], a1[r]);
  const float* x = g.x + at.t0 * ldx;
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  const uint16_t* w = static_cast<const uint16_t*>(panel) + at.k0 * kPanel;
  for (int64_t k = at.k0; k < at.k1; k += 2, w += 2 * kPanel) {
    const __m256i v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 16));
    const __m256 odd0 = _mm256_castsi256_ps(_mm256_and_si256(v0, high));
    const __m256 even0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
    const __m256 odd1 = _mm256_castsi256_ps(_mm256_and_si256(v1, high));
    const __m256 even1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 xo = _mm256_broadcast_ss(x + r * ldx + k + 1);
      const __m256 xe = _mm256_broadcast_ss(x + r * ldx + k);
      a0[r] = _mm256_fmadd_ps(xe, even0, _mm256_fmadd_ps(xo, odd0, a0[r]));
      a1[r] = _mm256_fmadd_ps(xe, even1, _mm256_fmadd_ps(xo, odd1, a1[r]));
    }
  }
  const float* bias = g.bias != nullptr && at.k1 == g.k ? g.bias + at.p * kPanel : nullptr;
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) StoreRow(a0[r], a1[r], bias, y + r * n, cols);
}

// One row against `NP` consecutive panels at once: decode streams weights, and NP panels
// in flight keep more loads outstanding.
template <typename W, int NP>
void FloatRow(const GemmProblem& g, int64_t t, int64_t p) {
  const size_t panel_bytes = kPanel * g.k * DTypeSize(g.dtype);
  __m256 a[NP][2];
  #pragma GCC unroll 16
  for (int i = 0; i < NP; ++i) a[i][0] = a[i][1] = _mm256_setzero_ps();
  const float* x = g.x + t * g.ldx;
  const char* base = static_cast<const char*>(g.w) + p * panel_bytes;
  for (int64_t k = 0; k < g.k; ++k) {
    const __m256 xv = _mm256_broadcast_ss(x + k);
    #pragma GCC unroll 16
    for (int i = 0; i < NP; ++i) {
      __m256 w[2];
      W::Load(base + i * panel_bytes, k, w);
      a[i][0] = _mm256_fmadd_ps(xv, w[0], a[i][0]);
      a[i][1] = _mm256_fmadd_ps(xv, w[1], a[i][1]);
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < NP; ++i) {
    const int64_t col = (p + i) * kPanel;
    StoreRow(a[i][0], a[i][1], g.bias != nullptr ? g.bias + col : nullptr, g.y + t * g.n + col,
             g.n - col);
  }
}

// Every row tile of panels [p0, p1), panel by panel, by blocks of k (the panel's y columns
// stay in cache between blocks): Tile<R>::Run(g, panel, at).
template <template <int> class Tile, int kRows>
void Tiled(const GemmProblem& g, int64_t p0, int64_t p1) {
  const size_t panel_bytes = kPanel * g.k * DTypeSize(g.dtype);
  for (int64_t p = p0; p < p1; ++p) {
    const void* panel = static_cast<const char*>(g.w) + p * panel_bytes;
    for (int64_t k0 = 0; k0 < g.k; k0 += kBlockK) {
      const int64_t k1 = std::min(g.k, k0 + kBlockK);
      int64_t t = 0;
      for (; t + kRows <= g.T; t += kRows) Tile<kRows>::Run(g, panel, {t, p, k0, k1});
      switch (g.T - t) {
        case 5: Tile<5>::Run(g, panel, {t, p, k0, k1}); break;
        case 4: Tile<4>::Run(g, panel, {t, p, k0, k1}); break;
        case 3: Tile<3>::Run(g, panel, {t, p, k0, k1}); break;
        case 2: Tile<2>::Run(g, panel, {t, p, k0, k1}); break;
        case 1: Tile<1>::Run(g, panel, {t, p, k0, k1}); break;
        default: break;
      }
    }
  }
}

template <int R> struct F32Tile { static void Run(const GemmProblem& g, const void* w, TileAt at) { FloatTile<F32Weights, R>(g, w, at); } };
template <int R> struct F16Tile { static void Run(const GemmProblem& g, const void* w, TileAt at) { FloatTile<F16Weights, R>(g, w, at); } };
template <int R> struct Bf16 { static void Run(const GemmProblem& g, const void* w, TileAt at) { Bf16Tile<R>(g, w, at); } };

template <typename W, template <int> class Tile>
void FloatPanels(const GemmProblem& g, int64_t p0, int64_t p1) {
  if (g.T != 1) return Tiled<Tile, 6>(g, p0, p1);
  int64_t p = p0;
  for (; p + 4 <= p1; p += 4) FloatRow<W, 4>(g, 0, p);
  for (; p < p1; ++p) FloatRow<W, 1>(g, 0, p);
}

void Bf16Panels(const GemmProblem& g, int64_t p0, int64_t p1) {
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(csr | 0x8040);  // FTZ | DAZ, as vdpbf16ps
  Tiled<Bf16, 4>(g, p0, p1);
  _mm_setcsr(csr);
}

}  // namespace

void GemmPanelsAvx2(const GemmProblem& g, int64_t p0, int64_t p1) {
  switch (g.dtype) {
    case DType::kF32: return FloatPanels<F32Weights, F32Tile>(g, p0, p1);
    case DType::kF16: return FloatPanels<F16Weights, F16Tile>(g, p0, p1);
    case DType::kBF16: return Bf16Panels(g, p0, p1);
    case DType::kI32: return;
  }
}

}  // namespace lensd
