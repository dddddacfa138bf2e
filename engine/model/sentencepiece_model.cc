#include "engine/model/sentencepiece_model.h"

#include <dlfcn.h>

#include "engine/core/module_loader.h"

namespace lensd {
namespace {

// The module's entry points (see sentencepiece_module.cc), resolved once per process.
struct ModuleApi {
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*destroy)(void*) = nullptr;
  long (*encode)(const void*, const char*, size_t, int*, size_t, char*, size_t) = nullptr;
  size_t (*decode)(const void*, const int*, size_t, char*, size_t) = nullptr;
  int (*size)(const void*) = nullptr;
  int (*bos_id)(const void*) = nullptr;
  std::string error;  // non-empty when the module could not be loaded
};

template <typename F>
void Resolve(void* handle, const char* name, F* fn, std::string* error) {
  *fn = reinterpret_cast<F>(dlsym(handle, name));
  if (*fn == nullptr) *error += std::string(" missing symbol ") + name;
}

const ModuleApi& Api() {
  static const ModuleApi* api = [] {
    auto* a = new ModuleApi();
    std::string error;
    void* handle = OpenModule("LENSD_SPM_MODULE", LENSD_SPM_MODULE_PATH, "liblensd_spm.so",
                              RTLD_NOW | RTLD_LOCAL, ModuleNamespace::kIsolated, &error);
    if (handle == nullptr) {
      a->error = "SentencePiece module: " + error;
      return a;
    }
    Resolve(handle, "lensd_spm_load", &a->load, &a->error);
    Resolve(handle, "lensd_spm_free", &a->destroy, &a->error);
    Resolve(handle, "lensd_spm_encode", &a->encode, &a->error);
    Resolve(handle, "lensd_spm_decode", &a->decode, &a->error);
    Resolve(handle, "lensd_spm_size", &a->size, &a->error);
    Resolve(handle, "lensd_spm_bos_id", &a->bos_id, &a->error);
    return a;
  }();
  return *api;
}

}  // namespace

struct SentencePieceModel::Impl {
  void* sp = nullptr;
};

SentencePieceModel::SentencePieceModel() : impl_(std::make_unique<Impl>()) {}

SentencePieceModel::~SentencePieceModel() {
  if (impl_->sp != nullptr) Api().destroy(impl_->sp);
}

std::string SentencePieceModel::Load(const std::string& path) {
  const ModuleApi& api = Api();
  if (!api.error.empty()) return api.error;
  char error[512] = "";
  void* sp = api.load(path.c_str(), error, sizeof(error));
  if (sp == nullptr) return error[0] != '\0' ? error : "cannot load";
  if (impl_->sp != nullptr) api.destroy(impl_->sp);
  impl_->sp = sp;
  return "";
}

std::string SentencePieceModel::Encode(const std::string& text, std::vector<int>* ids) const {
  char error[512] = "";
  ids->resize(text.size() + 2);  // pieces never outnumber bytes (byte fallback: one per byte)
  long n = Api().encode(impl_->sp, text.data(), text.size(), ids->data(), ids->size(), error,
                        sizeof(error));
  if (n > static_cast<long>(ids->size())) {
    ids->resize(static_cast<size_t>(n));
    n = Api().encode(impl_->sp, text.data(), text.size(), ids->data(), ids->size(), error,
                     sizeof(error));
  }
  if (n < 0) return error[0] != '\0' ? error : "cannot encode";
  ids->resize(static_cast<size_t>(n));
  return "";
}

std::string SentencePieceModel::Decode(const std::vector<int>& ids) const {
  std::string out(ids.size() * 16, '\0');
  size_t n = Api().decode(impl_->sp, ids.data(), ids.size(), out.data(), out.size());
  if (n > out.size()) {
    out.resize(n);
    n = Api().decode(impl_->sp, ids.data(), ids.size(), out.data(), out.size());
  }
  out.resize(n);
  return out;
}

int SentencePieceModel::size() const { return Api().size(impl_->sp); }
int SentencePieceModel::bos_id() const { return Api().bos_id(impl_->sp); }

}  // namespace lensd
