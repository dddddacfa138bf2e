// CpuBackend: the executable specification, and a fast one. float32 activations; GEMMs on
// weights packed at load by batch-invariant kernels chosen once per process by instruction
// set (engine/cpu/gemm.h); vectorised activations and attention with the same bits on every
// level (vec_ops.h); its own team of compute threads (thread_pool.h). Every other backend is
// tested against it.
#ifndef LENSD_ENGINE_CPU_CPU_BACKEND_H_
#define LENSD_ENGINE_CPU_CPU_BACKEND_H_

#include <memory>
#include <string>

#include "engine/backend/backend.h"

namespace lensd {

// `index` names the virtual device (cpu:N) in logs and errors; `threads` compute threads
// (0: one per hardware thread), the calling thread among them.
std::unique_ptr<Backend> MakeCpuBackend(int index, int threads = 0);

// The GEMM kernel families this process uses, e.g. "float32: avx2-fma; bfloat16: ...".
// $LENSD_CPU_KERNELS=scalar|avx2|avx512 caps the instruction set (the bits do not change).
std::string CpuKernelFamilies();

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_CPU_BACKEND_H_
