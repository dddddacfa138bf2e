#include "server/interventions_wire.h"

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

absl::Status CheckLimits(const WireInterventions& list, const InterventionLimits& limits) {
  if (list.size() > limits.max_interventions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "interventions has ", list.size(), " entries; this server allows ",
        limits.max_interventions, " per request (--max-interventions)"));
  }
  int64_t bytes = 0;
  for (const v1::Intervention& iv : list) bytes += ValueBytes(iv);
  if (bytes > limits.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "interventions carry ", bytes, " bytes of values; this server allows ", limits.max_bytes,
        " per request (--max-intervention-mib)"));
  }
  return absl::OkStatus();
}

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
  RETURN_IF_ERROR(CheckLimits(list, limits));
  std::vector<Intervention> out;
  for (int i = 0; i < list.size(); ++i) {
    const v1::Intervention& w = list[i];
    const std::string at = absl::StrCat("interventions[", i, "]");
    Intervention iv;
    absl::StatusOr<HookId> hook = HookFromName(c, w.hook());
    if (!hook.ok()) return absl::InvalidArgumentError(absl::StrCat(at, ".hook: ", hook.status().message()));
    iv.hook = *hook;
    iv.prompts.assign(w.prompts().begin(), w.prompts().end());
    iv.positions = ToSelector(w.positions());
    iv.heads.assign(w.heads().begin(), w.heads().end());
    iv.keys = ToSelector(w.keys());
    RETURN_IF_ERROR(ToOp(w, at, iv));
    out.push_back(std::move(iv));
  }
  return InterventionSet::Create(c, std::move(out), prompt_lengths, generate, max_tokens);
}

}  // namespace lensd
