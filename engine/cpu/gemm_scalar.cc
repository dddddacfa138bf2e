// Scalar GEMM kernels: the reference the vector kernels reproduce bit for bit (std::fma is
// correctly rounded, as vfmadd is).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/cpu/gemm.h"

namespace lensd {
namespace {

float Bf16(uint16_t bits) {
  uint32_t u = uint32_t{bits} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// What FTZ/DAZ make of a float: denormals become zero of the same sign.
float Flush(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }

float FmaFlushed(float a, float b, float c) {
  return Flush(std::fma(Flush(a), Flush(b), Flush(c)));
}

// Column j of panel `panel` over every k, for row t.
float Dot(const GemmProblem& g, const void* panel, int64_t t, int64_t j) {
  const float* x = g.x + t * g.ldx;
  float acc = 0.0f;
  switch (g.dtype) {
    case DType::kF32: {
      const float* w = static_cast<const float*>(panel);
      for (int64_t k = 0; k < g.k; ++k) acc = std::fma(x[k], w[k * kPanel + j], acc);
      break;
    }
    case DType::kF16: {
      const uint16_t* w = static_cast<const uint16_t*>(panel);
      for (int64_t k = 0; k < g.k; ++k) acc = std::fma(x[k], F16ToF32(w[k * kPanel + j]), acc);
      break;
    }
    case DType::kBF16: {
      const uint16_t* w = static_cast<const uint16_t*>(panel);
      for (int64_t k = 0; k < g.k; k += 2) {
        const uint16_t* pair = w + (k / 2 * kPanel + j) * 2;
        acc = FmaFlushed(x[k + 1], Bf16(pair[1]), acc);
        acc = FmaFlushed(x[k], Bf16(pair[0]), acc);
      }
      break;
    }
    case DType::kI32:
      break;
  }
  return acc;
}

}  // namespace

void GemmPanelsScalar(const GemmProblem& g, int64_t p0, int64_t p1) {
  const int64_t panel_elems = kPanel * g.k;
  const size_t elem = DTypeSize(g.dtype);
  for (int64_t p = p0; p < p1; ++p) {
    const void* panel = static_cast<const char*>(g.w) + p * panel_elems * elem;
    for (int64_t t = 0; t < g.T; ++t) {
      for (int64_t j = 0; j < kPanel && p * kPanel + j < g.n; ++j) {
        const int64_t n = p * kPanel + j;
        const float v = Dot(g, panel, t, j);
        if (g.bias == nullptr) {
          g.y[t * g.n + n] = v;
        } else {  // bfloat16 kernels add the bias under FTZ/DAZ too
          g.y[t * g.n + n] = g.dtype == DType::kBF16 ? Flush(Flush(v) + Flush(g.bias[n])) : v + g.bias[n];
        }
      }
    }
  }
}

}  // namespace lensd
