// Every family lensd knows, by model_type. A new family: its file beside this one, a line here.
#include "absl/strings/str_join.h"
#include "engine/model/family.h"

namespace lensd {

extern const FamilySpec kGpt2Family, kLlamaFamily, kMistralFamily, kQwen2Family, kGptNeoxFamily,
    kQwen3Family, kOlmo2Family, kGemma2Family, kGemma3TextFamily, kGemma3Family, kPhi3Family,
    kMixtralFamily, kQwen3MoeFamily;

namespace {

const FamilySpec* const kFamilies[] = {
    &kGpt2Family,  &kLlamaFamily,   &kMistralFamily, &kQwen2Family,      &kGptNeoxFamily,
    &kQwen3Family, &kOlmo2Family,   &kGemma2Family,  &kGemma3TextFamily, &kGemma3Family,
    &kPhi3Family,  &kMixtralFamily, &kQwen3MoeFamily};

}  // namespace

const FamilySpec* FindFamily(std::string_view model_type) {
  for (const FamilySpec* f : kFamilies) {
    if (model_type == f->model_type) return f;
  }
  return nullptr;
}

std::string SupportedModelTypes() {
  return absl::StrJoin(kFamilies, ", ", [](std::string* out, const FamilySpec* f) {
    out->append(f->model_type);
  });
}

}  // namespace lensd
