#include "engine/cpu/gemm.h"

#include <cstdlib>
#include <cstring>

#include "engine/core/dtype.h"

namespace lensd {

SimdLevel DetectSimdLevel() {
  static const SimdLevel level = [] {
    SimdLevel best = SimdLevel::kScalar;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = SimdLevel::kAvx2;
    if (best == SimdLevel::kAvx2 && __builtin_cpu_supports("avx512f")) best = SimdLevel::kAvx512;
#endif
    const char* cap = std::getenv("LENSD_CPU_KERNELS");
    if (cap != nullptr) {
      const std::string c = cap;
      const SimdLevel wanted = c == "scalar" ? SimdLevel::kScalar
                               : c == "avx2" ? SimdLevel::kAvx2
                                             : SimdLevel::kAvx512;
      if (wanted < best) best = wanted;
    }
    return best;
  }();
  return level;
}

bool HasAvx512Bf16() {
#if defined(__x86_64__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has && DetectSimdLevel() == SimdLevel::kAvx512;
#else
  return false;
#endif
}

std::string SimdLevelName(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar: return "scalar";
    case SimdLevel::kAvx2: return "avx2";
    case SimdLevel::kAvx512: return "avx512";
  }
  return "?";
}

std::string KernelFamilies(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return "float32: scalar-fmaf; bfloat16: scalar-widen; float16: scalar-widen";
    case SimdLevel::kAvx2:
      return "float32: avx2-fma; bfloat16: avx2-widen; float16: avx2-f16c";
    case SimdLevel::kAvx512:
      return std::string("float32: avx512f; bfloat16: ") +
             (HasAvx512Bf16() ? "avx512-bf16-dot" : "avx512-widen") + "; float16: avx512-f16c";
  }
  return "?";
}

int64_t PackedK(DType dtype, int64_t k) { return dtype == DType::kBF16 ? (k + 1) / 2 * 2 : k; }

int64_t PackedBytes(DType dtype, int64_t n, int64_t k) {
  const int64_t panels = (n + kPanel - 1) / kPanel;
  return panels * kPanel * PackedK(dtype, k) * static_cast<int64_t>(DTypeSize(dtype));
}

void PackMatrix(const float* w, int64_t n, int64_t k, DType dtype, void* out) {
  const int64_t kp = PackedK(dtype, k), panels = (n + kPanel - 1) / kPanel;
  const size_t elem = DTypeSize(dtype);
  std::memset(out, 0, static_cast<size_t>(PackedBytes(dtype, n, k)));
  for (int64_t p = 0; p < panels; ++p) {
    for (int64_t j = 0; j < kPanel && p * kPanel + j < n; ++j) {
      const float* row = w + (p * kPanel + j) * k;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t at = PackedIndex(dtype, kp, p, j, i);
        if (dtype == DType::kF32) {
          static_cast<float*>(out)[at] = row[i];
        } else {
          ConvertFromF32(&row[i], dtype, static_cast<char*>(out) + at * elem, 1);
        }
      }
    }
  }
}

void GemmPanels(const GemmProblem& g, int64_t p0, int64_t p1, SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar: return GemmPanelsScalar(g, p0, p1);
    case SimdLevel::kAvx2: return GemmPanelsAvx2(g, p0, p1);
    case SimdLevel::kAvx512: return GemmPanelsAvx512(g, p0, p1);
  }
}

}  // namespace lensd
