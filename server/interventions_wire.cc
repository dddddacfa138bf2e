#include "server/interventions_wire.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/dtype.h"
#include "engine/core/status.h"

namespace lensd {
namespace {

int64_t TensorBytes(const v1::Tensor& t) {
  return static_cast<int64_t>(t.data().size()) + int64_t{4} * t.values_size();
}

int64_t ValueBytes(const v1::Intervention& iv) {
  switch (iv.op_case()) {
    case v1::Intervention::kSet: return TensorBytes(iv.set().value());
    case v1::Intervention::kAdd: return TensorBytes(iv.add().value());
    case v1::Intervention::kProject: return TensorBytes(iv.project().direction());
    case v1::Intervention::kSaeClamp:
      return TensorBytes(iv.sae_clamp().encoder()) + TensorBytes(iv.sae_clamp().decoder()) +
             TensorBytes(iv.sae_clamp().decoder_bias());
    default: return 0;
  }
}

// `count` interventions carrying `bytes` of values; `expanded`: after globs and ranges were
// expanded (each hook an op reaches holds its own copy of the values).
absl::Status CheckLimits(int64_t count, int64_t bytes, bool expanded,
                         const InterventionLimits& limits) {
  const char* note = expanded ? " (hook patterns expanded)" : "";
  if (count > limits.max_interventions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("interventions has ", count, " entries", note, "; this server allows ",
                     limits.max_interventions, " per request (--max-interventions)"));
  }
  if (bytes > limits.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("interventions carry ", bytes, " bytes of values", note,
                     "; this server allows ", limits.max_bytes,
                     " per request (--max-intervention-mib)"));
  }
  return absl::OkStatus();
}

// The hooks an intervention's `hook` names: an exact name, or a glob or layer range as in
// names_filter ("blocks.*.hook_resid_post", "blocks.2-5.attn.hook_z"), in forward order.
absl::StatusOr<std::vector<HookId>> HooksOf(const ModelConfig& c, const std::string& pattern) {
  if (pattern.find_first_of("*?-") == std::string::npos) {  // no hook name has these
    ASSIGN_OR_RETURN(HookId id, HookFromName(c, pattern));
    return std::vector<HookId>{id};
  }
  ASSIGN_OR_RETURN(HookSelection selection, HookSelection::Parse(c, {pattern}));
  return selection.hooks();
}

}  // namespace

absl::StatusOr<FloatTensor> ToFloatTensor(const v1::Tensor& t, const std::string& field) {
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
  };
  if (t.shape().empty() && t.data().empty() && t.values().empty()) return invalid("is missing");
  FloatTensor out;
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    if (d < 1 || __builtin_mul_overflow(n, d, &n) || n > (int64_t{1} << 40)) {
      return invalid(absl::StrCat("has a bad shape dimension ", d));
    }
    out.shape.push_back(d);
  }
  if (!t.values().empty()) {
    if (!t.data().empty()) return invalid("sets both data and values");
    if (t.values_size() != n) {
      return invalid(absl::StrCat("has ", t.values_size(), " values for shape of ", n, " elements"));
    }
    out.data.assign(t.values().begin(), t.values().end());
  } else {
    DType dtype = DType::kF32;
    if (t.dtype() == v1::DTYPE_BFLOAT16) dtype = DType::kBF16;
    if (t.dtype() == v1::DTYPE_FLOAT16) dtype = DType::kF16;
    if (t.dtype() != v1::DTYPE_UNSPECIFIED && t.dtype() != v1::DTYPE_FLOAT32 && dtype == DType::kF32) {
      return invalid("dtype must be FLOAT32, BFLOAT16 or FLOAT16");
    }
    if (static_cast<int64_t>(t.data().size()) != n * static_cast<int64_t>(DTypeSize(dtype))) {
      return invalid(absl::StrCat("has ", t.data().size(), " bytes; its shape and dtype need ",
                                  n * static_cast<int64_t>(DTypeSize(dtype))));
    }
    out.data.resize(static_cast<size_t>(n));
    ConvertToF32(dtype, t.data().data(), out.data.data(), out.data.size());
  }
  if (out.shape.empty() && n == 1 && out.data.size() == 1) out.shape = {1};
  return out;
}

PositionSelector ToSelector(const v1::Positions& p) {
  using K = PositionSelector::Kind;
  PositionSelector s;
  switch (p.kind_case()) {
    case v1::Positions::kIndices:
      s.kind = K::kIndices;
      s.indices.assign(p.indices().values().begin(), p.indices().values().end());
      break;
    case v1::Positions::kSlice:
      s.kind = K::kSlice;
      if (p.slice().has_start()) s.start = p.slice().start();
      if (p.slice().has_stop()) s.stop = p.slice().stop();
      break;
    case v1::Positions::kScope:
      s.kind = p.scope() == v1::SCOPE_PROMPT      ? K::kPrompt
               : p.scope() == v1::SCOPE_GENERATED ? K::kGenerated
                                                  : K::kAll;
      break;
    case v1::Positions::KIND_NOT_SET:
      break;
  }
  return s;
}

namespace {

absl::Status ToSaeClamp(const v1::SaeClampOp& s, const std::string& at, Intervention& iv) {
  iv.encoder_bias = s.encoder_bias(), iv.threshold = s.threshold(), iv.target = s.target();
  iv.only_active = s.only_active();
  ASSIGN_OR_RETURN(iv.value, ToFloatTensor(s.encoder(), at + ".encoder"));
  ASSIGN_OR_RETURN(iv.decoder, ToFloatTensor(s.decoder(), at + ".decoder"));
  if (s.has_decoder_bias()) {
    ASSIGN_OR_RETURN(iv.decoder_bias, ToFloatTensor(s.decoder_bias(), at + ".decoder_bias"));
  }
  return absl::OkStatus();
}

// The op and its parameters; tensors decoded to float32.
absl::Status ToOp(const v1::Intervention& w, const std::string& at, Intervention& iv) {
  using V = v1::Intervention;
  absl::StatusOr<FloatTensor> value = FloatTensor{};
  switch (w.op_case()) {
    case V::kZero: iv.op = InterventionOp::kZero; break;
    case V::kScale: iv.op = InterventionOp::kScale, iv.factor = w.scale().factor(); break;
    case V::kSet:
      iv.op = InterventionOp::kSet;
      value = ToFloatTensor(w.set().value(), at + ".value");
      break;
    case V::kAdd:
      iv.op = InterventionOp::kAdd;
      if (w.add().has_coeff()) iv.coeff = w.add().coeff();
      value = ToFloatTensor(w.add().value(), at + ".value");
      break;
    case V::kPatch:
      iv.op = InterventionOp::kPatch, iv.source = w.patch().source();
      if (w.patch().has_source_positions()) iv.source_positions = ToSelector(w.patch().source_positions());
      break;
    case V::kProject:
      iv.op = InterventionOp::kProject, iv.target = w.project().target();
      value = ToFloatTensor(w.project().direction(), at + ".direction");
      break;
    case V::kSaeClamp:
      iv.op = InterventionOp::kSaeClamp;
      return ToSaeClamp(w.sae_clamp(), at, iv);
    case V::kNoise:
      iv.op = InterventionOp::kNoise, iv.std = w.noise().std(), iv.seed = w.noise().seed();
      break;
    case V::OP_NOT_SET:
      return absl::InvalidArgumentError(absl::StrCat(at, " has no op: set one of zero, scale, "
                                                     "set, add, patch, project, sae_clamp, noise"));
  }
  if (!value.ok()) return value.status();
  iv.value = std::move(*value);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const InterventionSet>> ToInterventionSet(
    const WireInterventions& list, const ModelConfig& c, const std::vector<int>& prompt_lengths,
    bool generate, int max_tokens, const InterventionLimits& limits) {
  if (list.empty()) return nullptr;
  // Before anything is expanded, so that a huge request costs nothing.
  int64_t bytes = 0;
  for (const v1::Intervention& w : list) bytes += ValueBytes(w);
  RETURN_IF_ERROR(CheckLimits(list.size(), bytes, false, limits));
  std::vector<std::vector<HookId>> hooks(list.size());
  int64_t count = 0;
  bytes = 0;
  for (int i = 0; i < list.size(); ++i) {
    if (IsFeatureEdit(list[i])) continue;  // an attached SAE's (sae_wire.h)
    if (!list[i].features().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("interventions[", i,
                       "].features applies to an attached SAE's <hook>.hook_sae_acts_post "
                       "only, not to ",
                       list[i].hook()));
    }
    absl::StatusOr<std::vector<HookId>> found = HooksOf(c, list[i].hook());
    if (!found.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("interventions[", i, "].hook: ", found.status().message()));
    }
    hooks[i] = std::move(*found);
    count += static_cast<int64_t>(hooks[i].size());
    bytes += static_cast<int64_t>(hooks[i].size()) * ValueBytes(list[i]);
  }
  RETURN_IF_ERROR(CheckLimits(count, bytes, count != list.size(), limits));
  std::vector<Intervention> out;
  for (int i = 0; i < list.size(); ++i) {
    const v1::Intervention& w = list[i];
    if (IsFeatureEdit(w)) continue;
    Intervention iv;
    iv.prompts.assign(w.prompts().begin(), w.prompts().end());
    iv.positions = ToSelector(w.positions());
    iv.heads.assign(w.heads().begin(), w.heads().end());
    iv.keys = ToSelector(w.keys());
    RETURN_IF_ERROR(ToOp(w, absl::StrCat("interventions[", i, "]"), iv));
    const bool pattern = hooks[i].size() != 1 || HookName(hooks[i][0]) != w.hook();
    for (HookId id : hooks[i]) {
      iv.hook = id;
      // Errors name the request's entry, and the hook when a pattern reached it.
      iv.name = pattern ? absl::StrCat("interventions[", i, "] (at ", HookName(id), ")")
                        : absl::StrCat("interventions[", i, "]");
      out.push_back(iv);
    }
  }
  if (out.empty()) return nullptr;
  return InterventionSet::Create(c, std::move(out), prompt_lengths, generate, max_tokens);
}

bool IsFeatureEdit(const v1::Intervention& w) {
  return absl::EndsWith(w.hook(), kFeatureHookSuffix);
}

}  // namespace lensd
