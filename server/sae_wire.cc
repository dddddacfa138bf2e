#include "server/sae_wire.h"

#include <cmath>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace lensd {
namespace {

absl::Status Invalid(const std::string& what) { return absl::InvalidArgumentError(what); }

// Per feature: the op's value (a scalar, or one per feature).
absl::StatusOr<std::vector<float>> EditValues(const v1::Intervention& w, size_t n,
                                              const std::string& at) {
  FloatTensor t;
  float coeff = 1.0f;
  switch (w.op_case()) {
    case v1::Intervention::kZero:
      return std::vector<float>(n, 0.0f);
    case v1::Intervention::kScale:
      return std::vector<float>(n, w.scale().factor());
    case v1::Intervention::kSet: {
      ASSIGN_OR_RETURN(t, ToFloatTensor(w.set().value(), at + ".set.value"));
      break;
    }
    case v1::Intervention::kAdd: {
      ASSIGN_OR_RETURN(t, ToFloatTensor(w.add().value(), at + ".add.value"));
      coeff = w.add().has_coeff() ? w.add().coeff() : 1.0f;
      break;
    }
    default:
      return Invalid(absl::StrCat(at, ".op: feature edits take zero, scale, set or add"));
  }
  if (t.data.size() != 1 && t.data.size() != n) {
    return Invalid(absl::StrCat(at, ": the value has ", t.data.size(), " elements; give one, or ",
                                "one per feature (", n, ")"));
  }
  std::vector<float> out(n);
  for (size_t j = 0; j < n; ++j) out[j] = coeff * t.data[t.data.size() == 1 ? 0 : j];
  return out;
}

// Intervention `i` (IsFeatureEdit) as an edit of `sae`'s features.
absl::StatusOr<FeatureEdit> ToFeatureEdit(const v1::Intervention& w, int i, const Sae& sae,
                                          const std::vector<int>& lengths, bool generate,
                                          int max_tokens) {
  const std::string at = absl::StrCat("interventions[", i, "]");
  if (!w.heads().empty() || w.has_keys()) {
    return Invalid(at + ": heads and keys do not apply to SAE features");
  }
  if (w.features().empty()) return Invalid(at + ".features is empty (the indices to edit)");
  FeatureEdit e;
  std::set<int> seen;
  for (int k = 0; k < w.features_size(); ++k) {
    const int f = w.features(k);
    if (f < 0 || f >= sae.spec().d_sae) {
      return Invalid(absl::StrCat(at, ".features[", k, "] = ", f, " is out of range: SAE '",
                                  sae.spec().name, "' has ", sae.spec().d_sae, " features"));
    }
    if (!seen.insert(f).second) {
      return Invalid(absl::StrCat(at, ".features[", k, "] repeats feature ", f));
    }
    e.features.push_back(f);
  }
  e.op = w.has_zero()    ? FeatureEdit::Op::kZero
         : w.has_scale() ? FeatureEdit::Op::kScale
         : w.has_set()   ? FeatureEdit::Op::kSet
                         : FeatureEdit::Op::kAdd;
  ASSIGN_OR_RETURN(e.values, EditValues(w, e.features.size(), at));
  for (float v : e.values) {
    if (!std::isfinite(v)) return Invalid(at + ": the value is not finite");
  }
  std::vector<int> prompts(w.prompts().begin(), w.prompts().end());
  if (prompts.empty()) {
    for (int p = 0; p < static_cast<int>(lengths.size()); ++p) prompts.push_back(p);
  }
  e.positions.resize(lengths.size());
  for (size_t k = 0; k < prompts.size(); ++k) {
    const int p = prompts[k];
    if (p < 0 || p >= static_cast<int>(lengths.size())) {
      return Invalid(absl::StrCat(at, ".prompts[", k, "] = ", p, " is out of range: the request ",
                                  "has ", lengths.size(), " prompt(s)"));
    }
    const std::string prompt = generate
                                   ? absl::StrCat("the prompt (", lengths[p], " tokens)")
                                   : absl::StrCat("prompts[", p, "] (", lengths[p], " tokens)");
    ASSIGN_OR_RETURN(e.positions[p], ResolvePositions(ToSelector(w.positions()), lengths[p],
                                                      generate ? max_tokens : lengths[p], generate,
                                                      at + ".positions", prompt));
  }
  return e;
}

}  // namespace

absl::StatusOr<AttachmentList> ToAttachments(
    const google::protobuf::RepeatedPtrField<v1::SaeAttach>& saes,
    const WireInterventions& interventions, const SaeSet* loaded,
    const std::vector<int>& prompt_lengths, bool generate, int max_tokens) {
  std::vector<std::shared_ptr<const Sae>> found;
  const SaeSet none;
  for (int i = 0; i < saes.size(); ++i) {
    absl::StatusOr<std::shared_ptr<const Sae>> sae =
        FindSae(loaded != nullptr ? *loaded : none, saes[i].name());
    if (!sae.ok()) return Invalid(absl::StrCat("saes[", i, "]: ", sae.status().message()));
    found.push_back(*std::move(sae));
  }
  std::vector<std::vector<FeatureEdit>> edits(found.size());
  for (int i = 0; i < interventions.size(); ++i) {
    const v1::Intervention& w = interventions[i];
    if (!IsFeatureEdit(w)) continue;
    const std::string site = w.hook().substr(0, w.hook().size() - sizeof(kFeatureHookSuffix) + 1);
    // "<hook>.hook_sae_acts_post", or "<SAE name>.hook_sae_acts_post".
    size_t k = 0;
    while (k < found.size() && HookName(found[k]->spec().site) != site &&
           found[k]->spec().name != site) {
      ++k;
    }
    if (k == found.size()) {
      return Invalid(absl::StrCat("interventions[", i, "].hook: no SAE in saes is attached at ",
                                  site, " or named so"));
    }
    ASSIGN_OR_RETURN(FeatureEdit e,
                     ToFeatureEdit(w, i, *found[k], prompt_lengths, generate, max_tokens));
    edits[k].push_back(std::move(e));
  }
  AttachmentList out;
  for (size_t k = 0; k < found.size(); ++k) {
    out.push_back(found[k]->Attach(saes[static_cast<int>(k)].splice(), std::move(edits[k])));
  }
  return out;
}

}  // namespace lensd
