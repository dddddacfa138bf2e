#include "engine/model/sentencepiece_model.h"

#include <dlfcn.h>

#include "engine/core/module_loader.h"

namespace lensd {
namespace {

// The module's entry points (see sentencepiece_module.cc), resolved once per process.
struct ModuleApi {
  void* (*create)() = nullptr;
  void (*destroy)(void*) = nullptr;
  void (*load)(void*, const std::string*, std::string*) = nullptr;
  void (*encode)(const void*, const std::string*, std::vector<int>*, std::string*) = nullptr;
  void (*decode)(const void*, const std::vector<int>*, std::string*) = nullptr;
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
                              RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND, &error);
    if (handle == nullptr) {
      a->error = "SentencePiece module: " + error;
      return a;
    }
    Resolve(handle, "lensd_spm_new", &a->create, &a->error);
    Resolve(handle, "lensd_spm_free", &a->destroy, &a->error);
    Resolve(handle, "lensd_spm_load", &a->load, &a->error);
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
  if (impl_->sp == nullptr) impl_->sp = api.create();
  std::string error;
  api.load(impl_->sp, &path, &error);
  return error;
}

std::string SentencePieceModel::Encode(const std::string& text, std::vector<int>* ids) const {
  std::string error;
  Api().encode(impl_->sp, &text, ids, &error);
  return error;
}

std::string SentencePieceModel::Decode(const std::vector<int>& ids) const {
  std::string out;
  Api().decode(impl_->sp, &ids, &out);
  return out;
}

int SentencePieceModel::size() const { return Api().size(impl_->sp); }
int SentencePieceModel::bos_id() const { return Api().bos_id(impl_->sp); }

}  // namespace lensd
