// Finding and opening lensd's own dlopen'ed modules (the SentencePiece and CUDA modules).
#ifndef LENSD_ENGINE_CORE_MODULE_LOADER_H_
#define LENSD_ENGINE_CORE_MODULE_LOADER_H_

#include <string>

namespace lensd {

// kShared: the process's namespace (dlopen). kIsolated: a link-map namespace of its own
// (dlmopen(LM_ID_NEWLM)) with its own copies of its dependencies, libc included; only C types
// may cross its entry points.
enum class ModuleNamespace { kShared, kIsolated };

// Opens module `file_name` with `flags`, trying in order: the path in environment variable
// `env_var` (when set), `build_path` (the build tree's copy; empty to skip), the directory of the running
// executable, then the dynamic linker's search path. Returns nullptr and, in `error`, every
// path tried with dlerror()'s reason when none loads.
void* OpenModule(const char* env_var, const std::string& build_path, const std::string& file_name,
                 int flags, ModuleNamespace where, std::string* error);

}  // namespace lensd

#endif  // LENSD_ENGINE_CORE_MODULE_LOADER_H_
