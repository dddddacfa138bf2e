#include "engine/core/module_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

namespace lensd {
namespace {

std::string ExecutableDir() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  const std::string s(path, static_cast<size_t>(n));
  return s.substr(0, s.rfind('/'));
}

}  // namespace

void* OpenModule(const char* env_var, const std::string& build_path, const std::string& file_name,
                 int flags, ModuleNamespace where, std::string* error) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv(env_var)) candidates.push_back(env);
  if (!build_path.empty()) candidates.push_back(build_path);
  candidates.push_back(ExecutableDir() + "/" + file_name);
  candidates.push_back(file_name);
  *error = "cannot load " + file_name + "; tried:";
  for (const std::string& c : candidates) {
    void* handle = where == ModuleNamespace::kIsolated ? dlmopen(LM_ID_NEWLM, c.c_str(), flags)
                                                       : dlopen(c.c_str(), flags);
    if (handle != nullptr) return handle;
    *error += "\n  " + c + ": " + dlerror();
  }
  return nullptr;
}

}  // namespace lensd
