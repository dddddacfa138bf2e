// CpuBackend: the executable specification. float32 everywhere, OpenBLAS for GEMM,
// straightforward loops elsewhere. Every other backend is tested against it.
#ifndef LENSD_ENGINE_CPU_CPU_BACKEND_H_
#define LENSD_ENGINE_CPU_CPU_BACKEND_H_

#include <memory>

#include "engine/runtime/backend.h"

namespace lensd {

// `index` names the virtual device (cpu:N) in logs and errors.
std::unique_ptr<Backend> MakeCpuBackend(int index);

// Sets the threads OpenBLAS and the attention loops use (process-wide).
void SetCpuThreads(int threads);

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_CPU_BACKEND_H_
