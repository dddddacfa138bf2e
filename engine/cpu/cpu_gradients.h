// The CPU backend's gradient ops (engine/backend/gradient_ops.h): plain loops over rows,
// split across the backend's thread pool, each sum in a fixed order (the pattern recomputed
// in double), so a sequence's gradients do not depend on its batch or the thread count.
#ifndef LENSD_ENGINE_CPU_CPU_GRADIENTS_H_
#define LENSD_ENGINE_CPU_CPU_GRADIENTS_H_

#include <memory>

#include "engine/backend/gradient_ops.h"
#include "engine/cpu/gemm.h"
#include "engine/cpu/thread_pool.h"

namespace lensd {

// `level`: the GEMM kernels' instruction set (the backend's).
std::unique_ptr<GradientOps> MakeCpuGradientOps(ThreadPool& pool, SimdLevel level);

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_CPU_GRADIENTS_H_
