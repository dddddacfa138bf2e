// Loading SAEs: cfg.json and sae_weights.safetensors as SAELens writes them (save_model), or
// Gemma Scope's params.npz.
#include "engine/runtime/sae.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status.h"
#include "engine/model/json_fields.h"
#include "engine/model/npz.h"
#include "engine/model/safetensors.h"
#include "engine/runtime/hooks.h"

namespace lensd {
namespace {

using json = nlohmann::json;

// An SAE's weights in host float32, as SAELens names them (threshold: JumpReLU only).
struct SaeWeights {
  std::vector<float> w_enc, w_dec, b_enc, b_dec, threshold;
};

absl::Status Invalid(const std::string& what) { return absl::InvalidArgumentError(what); }

absl::Status Bad(const std::string& file, const std::string& what) {
  return Invalid(absl::StrCat(file, ": ", what));
}

// "NAME=DIR[@HOOK]" into its parts.
absl::Status SplitArg(std::string_view arg, std::string& name, std::string& dir,
                      std::string& hook) {
  const size_t eq = arg.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == arg.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sae ", std::string(arg), ": expected NAME=DIR or NAME=DIR@blocks.L.hook_..."));
  }
  name = std::string(arg.substr(0, eq));
  std::string_view rest = arg.substr(eq + 1);
  const size_t at = rest.rfind('@');
  dir = std::string(rest.substr(0, at));
  hook = at == std::string_view::npos ? "" : std::string(rest.substr(at + 1));
  const bool plain = std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.';
  });
  if (!plain) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sae ", std::string(arg), ": the name may hold letters, digits, '_', '-' and '.'"));
  }
  return absl::OkStatus();
}

// The architecture: SAELens 6's "architecture", else the older activation_fn_str (+ kwargs.k).
absl::Status ParseKind(const json& j, SaeSpec& s) {
  std::string arch;
  int k_fallback = 0;
  if (JsonHas(j, "architecture")) {
    ASSIGN_OR_RETURN(arch, JsonString(j, "architecture", ""));
  } else {
    ASSIGN_OR_RETURN(std::string act, JsonString(j, "activation_fn_str", "relu"));
    arch = act == "relu" ? "standard" : act;
    if (JsonHas(j, "activation_fn_kwargs") && j["activation_fn_kwargs"].is_object()) {
      ASSIGN_OR_RETURN(k_fallback, JsonInt(j["activation_fn_kwargs"], "k", 0, 0, INT32_MAX));
    }
  }
  if (arch == "standard") {
    s.kind = SaeSpec::Kind::kStandard;
  } else if (arch == "jumprelu") {
    s.kind = SaeSpec::Kind::kJumpRelu;
  } else if (arch == "topk") {
    s.kind = SaeSpec::Kind::kTopK;
    ASSIGN_OR_RETURN(s.k, JsonInt(j, "k", k_fallback, 1, s.d_sae));
    ASSIGN_OR_RETURN(s.rescale_acts_by_decoder_norm,
                     JsonBool(j, "rescale_acts_by_decoder_norm", false));
  } else {
    return Invalid(
        absl::StrCat("architecture '", arch, "' is not supported (standard, jumprelu, topk)"));
  }
  return absl::OkStatus();
}

absl::Status ParseNorm(const json& j, SaeSpec& s) {
  ASSIGN_OR_RETURN(std::string norm, JsonString(j, "normalize_activations", "none"));
  if (norm == "none" || norm == "expected_average_only_in") {
    s.norm = SaeSpec::Norm::kNone;
  } else if (norm == "constant_norm_rescale") {
    s.norm = SaeSpec::Norm::kConstantNormRescale;
  } else if (norm == "layer_norm") {
    s.norm = SaeSpec::Norm::kLayerNorm;
  } else {
    return Invalid(absl::StrCat("normalize_activations '", norm,
                                "' is not supported (none, expected_average_only_in, "
                                "constant_norm_rescale, layer_norm)"));
  }
  return absl::OkStatus();
}

// `hook` as s.site: a hook of the model an SAE can attach at, of width s.d_in.
absl::Status SetSite(const ModelConfig& c, const std::string& hook, SaeSpec& s) {
  ASSIGN_OR_RETURN(s.site, HookFromName(c, hook));
  RETURN_IF_ERROR(CheckAttachmentSite(c, s.site));
  const int64_t width = PositionWidth(c, s.site.point);
  if (s.d_in != width) {
    return Invalid(absl::StrCat("d_in = ", s.d_in, " but ", hook, " has width ", width));
  }
  return absl::OkStatus();
}

// cfg.json's hook (metadata.hook_name, else hook_name) or `hook`, checked against the model.
absl::Status ParseSite(const json& j, const ModelConfig& c, std::string hook, SaeSpec& s) {
  if (hook.empty() && JsonHas(j, "metadata") && j["metadata"].is_object()) {
    ASSIGN_OR_RETURN(hook, JsonString(j["metadata"], "hook_name", ""));
  }
  if (hook.empty()) {
    ASSIGN_OR_RETURN(hook, JsonString(j, "hook_name", ""));
  }
  if (hook.empty()) {
    return Invalid("no hook_name (metadata.hook_name); give it as NAME=DIR@blocks.L.hook_...");
  }
  return SetSite(c, hook, s);
}

absl::StatusOr<SaeSpec> ParseSpec(const ModelConfig& c, std::string_view text,
                                  const std::string& hook) {
  ASSIGN_OR_RETURN(json j, ParseJson(text));
  if (!j.is_object()) return Invalid("not a JSON object");
  SaeSpec s;
  ASSIGN_OR_RETURN(int d_in, JsonInt(j, "d_in", 0, 1, INT32_MAX));
  ASSIGN_OR_RETURN(int d_sae, JsonInt(j, "d_sae", 0, 1, INT32_MAX));
  s.d_in = d_in, s.d_sae = d_sae;
  ASSIGN_OR_RETURN(s.apply_b_dec_to_input, JsonBool(j, "apply_b_dec_to_input", true));
  RETURN_IF_ERROR(ParseKind(j, s));
  RETURN_IF_ERROR(ParseNorm(j, s));
  RETURN_IF_ERROR(ParseSite(j, c, hook, s));
  return s;
}

// Weights `name` of `file` (float32 `data` of shape `got`), which must have shape `want` and
// finite values.
absl::StatusOr<std::vector<float>> Checked(const std::string& file, const std::string& name,
                                           const std::vector<int64_t>& got, std::vector<float> data,
                                           const std::vector<int64_t>& want) {
  if (got != want) {
    return Bad(file, absl::StrCat(name, " has shape [", absl::StrJoin(got, ", "), "], expected [",
                                  absl::StrJoin(want, ", "), "]"));
  }
  if (!std::all_of(data.begin(), data.end(), [](float x) { return std::isfinite(x); })) {
    return Bad(file, absl::StrCat(name, " has non-finite values"));
  }
  return data;
}

absl::StatusOr<std::vector<float>> ReadTensor(const SafetensorsFile& file, const std::string& name,
                                              const std::vector<int64_t>& shape) {
  const TensorInfo* t = file.Find(name);
  if (t == nullptr) return Bad(file.path(), absl::StrCat("no tensor ", name));
  std::vector<float> out(t->num_bytes / DTypeSize(t->dtype));
  ConvertToF32(t->dtype, t->data, out.data(), out.size());
  return Checked(file.path(), name, t->shape, std::move(out), shape);
}

// SAELens's sae_weights.safetensors for `s`.
absl::StatusOr<SaeWeights> ReadSaeLensWeights(const std::string& dir, const SaeSpec& s) {
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/sae_weights.safetensors"));
  SaeWeights w;
  ASSIGN_OR_RETURN(w.w_enc, ReadTensor(*file, "W_enc", {s.d_in, s.d_sae}));
  ASSIGN_OR_RETURN(w.w_dec, ReadTensor(*file, "W_dec", {s.d_sae, s.d_in}));
  ASSIGN_OR_RETURN(w.b_enc, ReadTensor(*file, "b_enc", {s.d_sae}));
  ASSIGN_OR_RETURN(w.b_dec, ReadTensor(*file, "b_dec", {s.d_in}));
  if (s.kind == SaeSpec::Kind::kJumpRelu) {
    const bool log = file->Find("threshold") == nullptr && file->Find("log_threshold") != nullptr;
    ASSIGN_OR_RETURN(w.threshold,
                     ReadTensor(*file, log ? "log_threshold" : "threshold", {s.d_sae}));
    if (log) {
      for (float& t : w.threshold) t = std::exp(t);
    }
  }
  return w;
}

// Gemma Scope's params.npz (JumpReLU; W_enc [d_model, d_sae], W_dec, b_enc, b_dec, threshold;
// no b_dec on the input, no normalisation) at `hook`, which the argument must give.
absl::StatusOr<SaeWeights> ReadGemmaScope(const std::string& path, const ModelConfig& c,
                                          const std::string& hook, SaeSpec& s) {
  if (hook.empty()) {
    return Bad(path,
               "Gemma Scope's params.npz names no hook: give it as NAME=DIR@blocks.L.hook_...");
  }
  ASSIGN_OR_RETURN(auto arrays, ReadNpz(path));
  for (const char* name : {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}) {
    if (arrays.count(name) == 0) return Bad(path, absl::StrCat("no array ", name));
  }
  const std::vector<int64_t>& enc = arrays["W_enc"].shape;
  if (enc.size() != 2) return Bad(path, "W_enc is not a matrix");
  s.kind = SaeSpec::Kind::kJumpRelu;
  s.apply_b_dec_to_input = false;
  s.d_in = enc[0], s.d_sae = enc[1];
  absl::Status site = SetSite(c, hook, s);
  if (!site.ok()) return Bad(path, std::string(site.message()));
  SaeWeights w;
  auto take = [&](const char* name, const std::vector<int64_t>& want) {
    NpyArray& a = arrays[name];
    return Checked(path, name, a.shape, std::move(a.data), want);
  };
  ASSIGN_OR_RETURN(w.w_enc, take("W_enc", {s.d_in, s.d_sae}));
  ASSIGN_OR_RETURN(w.w_dec, take("W_dec", {s.d_sae, s.d_in}));
  ASSIGN_OR_RETURN(w.b_enc, take("b_enc", {s.d_sae}));
  ASSIGN_OR_RETURN(w.b_dec, take("b_dec", {s.d_in}));
  ASSIGN_OR_RETURN(w.threshold, take("threshold", {s.d_sae}));
  return w;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// [rows, cols] row-major → [cols, rows].
std::vector<float> Transposed(const std::vector<float>& m, int64_t rows, int64_t cols) {
  std::vector<float> t(m.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = m[r * cols + c];
  }
  return t;
}

}  // namespace

const char* SaeKindName(SaeSpec::Kind kind) {
  switch (kind) {
    case SaeSpec::Kind::kStandard:
      return "standard";
    case SaeSpec::Kind::kJumpRelu:
      return "jumprelu";
    case SaeSpec::Kind::kTopK:
      return "topk";
  }
  return "?";
}

absl::StatusOr<std::shared_ptr<const Sae>> Sae::Load(const Model& model, std::string_view arg) {
  std::string name, dir, hook;
  RETURN_IF_ERROR(SplitArg(arg, name, dir, hook));
  auto sae = std::make_shared<Sae>();
  SaeSpec& s = sae->spec_;
  SaeWeights w;
  const std::string cfg_path = dir + "/cfg.json", npz_path = dir + "/params.npz";
  if (Exists(cfg_path) || !Exists(npz_path)) {  // SAELens (and its error when neither is there)
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(cfg_path));
    absl::StatusOr<SaeSpec> spec = ParseSpec(model.config(), text, hook);
    if (!spec.ok()) return Bad(cfg_path, std::string(spec.status().message()));
    s = *std::move(spec);
    ASSIGN_OR_RETURN(w, ReadSaeLensWeights(dir, s));
  } else {
    ASSIGN_OR_RETURN(w, ReadGemmaScope(npz_path, model.config(), hook, s));
  }
  s.name = name, s.dir = dir;
  sae->host_.b_dec = w.b_dec;
  sae->host_.threshold = std::move(w.threshold);
  for (int64_t f = 0; f < s.d_sae && s.rescale_acts_by_decoder_norm; ++f) {
    double sum = 0;
    for (int64_t i = 0; i < s.d_in; ++i)
      sum += double{w.w_dec[f * s.d_in + i]} * w.w_dec[f * s.d_in + i];
    sae->host_.decoder_norm.push_back(static_cast<float>(std::sqrt(sum)));
  }
  RETURN_IF_ERROR(sae->Upload(model, Transposed(w.w_enc, s.d_in, s.d_sae), w.b_enc,
                              Transposed(w.w_dec, s.d_sae, s.d_in)));
  sae->host_.w_dec = std::move(w.w_dec);
  return std::shared_ptr<const Sae>(std::move(sae));
}

absl::Status Sae::Upload(const Model& model, const std::vector<float>& w_enc,
                         const std::vector<float>& b_enc, const std::vector<float>& w_dec) {
  const int64_t in = spec_.d_in, n = spec_.d_sae;
  for (Backend* b : model.BackendsAt(spec_.site)) {
    DeviceWeights& d = devices_[b];
    ASSIGN_OR_RETURN(d.w_enc, b->AllocateMatrix(model.dtype(), {n, in}));
    ASSIGN_OR_RETURN(d.w_dec, b->AllocateMatrix(model.dtype(), {in, n}));
    ASSIGN_OR_RETURN(d.b_enc, b->Allocate(DType::kF32, {n}));
    ASSIGN_OR_RETURN(d.b_dec, b->Allocate(DType::kF32, {in}));
    b->UploadMatrix(w_enc.data(), d.w_enc.view());
    b->UploadMatrix(w_dec.data(), d.w_dec.view());
    b->Upload(b_enc.data(), d.b_enc.view());
    b->Upload(host_.b_dec.data(), d.b_dec.view());
    device_bytes_ = static_cast<int64_t>(d.w_enc.NumBytes() + d.w_dec.NumBytes() +
                                         d.b_enc.NumBytes() + d.b_dec.NumBytes());
  }
  return absl::OkStatus();
}

absl::StatusOr<SaeSet> LoadSaes(const Model& model, const std::vector<std::string>& args) {
  SaeSet saes;
  for (const std::string& arg : args) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Sae> sae, Sae::Load(model, arg));
    const SaeSpec& s = sae->spec();
    spdlog::info("sae {}: {} with {} features at {} ({}), {:.1f} MiB per device", s.name,
                 SaeKindName(s.kind), s.d_sae, HookName(s.site), s.dir,
                 static_cast<double>(sae->device_bytes()) / (1 << 20));
    const std::string name = s.name;
    if (!saes.emplace(name, std::move(sae)).second) {
      return absl::InvalidArgumentError(absl::StrCat("--sae: the name '", name, "' is used twice"));
    }
  }
  return saes;
}

absl::StatusOr<std::shared_ptr<const Sae>> FindSae(const SaeSet& saes, std::string_view name) {
  auto it = saes.find(std::string(name));
  if (it != saes.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [n, sae] : saes) names.push_back(n);
  return absl::InvalidArgumentError(absl::StrCat(
      "no SAE named '", std::string(name), "'; loaded: ",
      names.empty() ? "none (start the server with --sae NAME=DIR)" : absl::StrJoin(names, ", ")));
}

}  // namespace lensd
