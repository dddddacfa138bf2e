// Rotary embedding on the CPU, forward and transposed: each (i, i + rotary_dim/2) pair of every
// head of x[T, heads, dh] turned by position · inv_freq[i] (the angle in double, its cos and sin
// in float32, both times `scale`), or back by the same angle for the gradient. One loop serves
// CpuBackend::Rope and its backward twin, so both use the same float32 cos and sin.
#ifndef LENSD_ENGINE_CPU_ROTARY_H_
#define LENSD_ENGINE_CPU_ROTARY_H_

#include <cmath>
#include <cstdint>

#include "engine/core/tensor.h"
#include "engine/cpu/thread_pool.h"

namespace lensd {

inline void RotateHalves(ThreadPool& pool, TensorView x, TensorView inv_freq, int rotary_dim,
                         const int32_t* positions, float scale, bool transposed) {
  const int64_t T = x.shape[0], heads = x.shape[1], dh = x.shape[2];
  const int half = rotary_dim / 2;
  pool.ParallelFor(T, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int i = 0; i < half; ++i) {
        const double angle = static_cast<double>(positions[t]) * inv_freq.As<float>()[i];
        const float c = static_cast<float>(std::cos(angle)) * scale;
        const float sin = static_cast<float>(std::sin(angle)) * scale;
        const float s = transposed ? -sin : sin;
        for (int64_t h = 0; h < heads; ++h) {
          float* row = x.As<float>() + (t * heads + h) * dh;
          const float x1 = row[i], x2 = row[i + half];
          row[i] = x1 * c - x2 * s;
          row[i + half] = x2 * c + x1 * s;
        }
      }
    }
  });
}

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_ROTARY_H_
