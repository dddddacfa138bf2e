#include "cli/interventions_json.h"

#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status.h"
#include "engine/core/user_text.h"
#include "engine/model/json_fields.h"
#include "engine/model/safetensors.h"

namespace lensd {
namespace {

using nlohmann::json;

// The fields each op takes, beside the common ones.
const std::map<std::string, std::set<std::string>>& OpFields() {
  static const auto* fields = new std::map<std::string, std::set<std::string>>{
      {"zero", {}},
      {"scale", {"factor"}},
      {"set", {"value"}},
      {"add", {"value", "coeff"}},
      {"patch", {"source", "source_positions"}},
      {"project", {"direction", "target"}},
      {"sae_clamp",
       {"encoder", "encoder_bias", "decoder", "decoder_bias", "threshold", "target",
        "only_active"}},
      {"noise", {"std", "seed"}},
  };
  return *fields;
}
const std::set<std::string> kCommonFields = {"hook",  "op",   "prompts", "positions",
                                             "heads", "keys", "features"};

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

absl::StatusOr<int> Int(const json& j, const std::string& field) {
  if (!j.is_number_integer() || j.get<int64_t>() < INT32_MIN || j.get<int64_t>() > INT32_MAX) {
    return Invalid(field, "must be an integer");
  }
  return j.get<int>();
}

absl::StatusOr<float> Float(const json& j, const std::string& field) {
  if (!j.is_number() || !std::isfinite(j.get<double>())) return Invalid(field, "must be a number");
  return j.get<float>();
}

absl::Status IntList(const json& j, const std::string& field,
                     google::protobuf::RepeatedField<int32_t>* out) {
  if (!j.is_array()) return Invalid(field, "must be a list of integers");
  for (size_t k = 0; k < j.size(); ++k) {
    ASSIGN_OR_RETURN(int v, Int(j[k], absl::StrCat(field, "[", k, "]")));
    out->Add(v);
  }
  return absl::OkStatus();
}

absl::Status ToPositions(const json& j, const std::string& field, v1::Positions* out) {
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s == "all") return out->set_scope(v1::SCOPE_ALL), absl::OkStatus();
    if (s == "prompt") return out->set_scope(v1::SCOPE_PROMPT), absl::OkStatus();
    if (s == "generated") return out->set_scope(v1::SCOPE_GENERATED), absl::OkStatus();
    return Invalid(field, absl::StrCat("= ", QuoteUserText(s),
                                       " is not \"all\", \"prompt\" or "
                                       "\"generated\""));
  }
  if (j.is_array()) return IntList(j, field, out->mutable_indices()->mutable_values());
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() != "start" && it.key() != "stop") {
        return Invalid(field, absl::StrCat("has unknown key ", QuoteUserText(it.key()),
                                           " (a slice takes start and stop)"));
      }
      if (it.value().is_null()) continue;
      ASSIGN_OR_RETURN(int v, Int(it.value(), field + "." + it.key()));
      it.key() == "start" ? out->mutable_slice()->set_start(v) : out->mutable_slice()->set_stop(v);
    }
    out->mutable_slice();
    return absl::OkStatus();
  }
  return Invalid(field,
                 "must be a list of indices, {\"start\", \"stop\"} or \"all\", \"prompt\", "
                 "\"generated\"");
}

// Nested arrays of numbers: shape from the nesting (rectangular), values row-major.
absl::Status Flatten(const json& j, size_t depth, const std::string& field, v1::Tensor* out) {
  if (!j.is_array()) {
    if (depth != static_cast<size_t>(out->shape_size()))
      return Invalid(field, "is not rectangular");
    ASSIGN_OR_RETURN(float v, Float(j, field));
    out->add_values(v);
    return absl::OkStatus();
  }
  if (depth == static_cast<size_t>(out->shape_size())) {
    if (j.empty()) return Invalid(field, "has an empty dimension");
    out->add_shape(static_cast<int64_t>(j.size()));
  } else if (depth > static_cast<size_t>(out->shape_size()) ||
             out->shape(static_cast<int>(depth)) != static_cast<int64_t>(j.size())) {
    return Invalid(field, "is not rectangular");
  }
  for (const json& e : j) RETURN_IF_ERROR(Flatten(e, depth + 1, field, out));
  return absl::OkStatus();
}

absl::Status FromFile(const json& j, const std::string& base_dir, const std::string& field,
                      v1::Tensor* out) {
  if (j.size() != 2 || !j.contains("file") || !j["file"].is_string() || !j.contains("tensor") ||
      !j["tensor"].is_string()) {
    return Invalid(field, "as an object needs exactly {\"file\": ..., \"tensor\": ...}");
  }
  std::string path = j["file"].get<std::string>();
  if (!path.empty() && path[0] != '/') path = base_dir + "/" + path;
  return TensorFromSafetensors(path, j["tensor"].get<std::string>(), field, out);
}

}  // namespace

absl::Status TensorFromSafetensors(const std::string& path, const std::string& name,
                                   const std::string& field, v1::Tensor* out) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return Invalid(field, std::string(file.status().message()));
  const TensorInfo* t = (*file)->Find(name);
  if (t == nullptr)
    return Invalid(field, absl::StrCat(": ", path, " has no tensor ", QuoteUserText(name)));
  switch (t->dtype) {
    case DType::kF32:
      out->set_dtype(v1::DTYPE_FLOAT32);
      break;
    case DType::kBF16:
      out->set_dtype(v1::DTYPE_BFLOAT16);
      break;
    case DType::kF16:
      out->set_dtype(v1::DTYPE_FLOAT16);
      break;
    case DType::kI32:
      return Invalid(field, absl::StrCat(": ", path, " ", name, " is not floating point"));
  }
  for (int64_t d : t->shape) out->add_shape(d);
  out->set_data(static_cast<const char*>(t->data), t->num_bytes);
  return absl::OkStatus();
}

namespace {

absl::Status ToTensor(const json& j, const std::string& base_dir, const std::string& field,
                      v1::Tensor* out) {
  if (j.is_object()) return FromFile(j, base_dir, field, out);
  return Flatten(j, 0, field, out);
}

// The op's parameters (fields of OpFields()[op]).
absl::Status ToOp(const json& j, const std::string& op, const std::string& at,
                  const std::string& base_dir, v1::Intervention* iv) {
  auto field = [&](const char* name) { return absl::StrCat(at, ".", name); };
  auto number = [&](const char* name, float fallback) -> absl::StatusOr<float> {
    return j.contains(name) ? Float(j[name], field(name)) : fallback;
  };
  auto tensor = [&](const char* name, v1::Tensor* t) -> absl::Status {
    if (!j.contains(name)) return Invalid(field(name), "is required");
    return ToTensor(j[name], base_dir, field(name), t);
  };
  if (op == "zero") iv->mutable_zero();
  if (op == "scale") {
    ASSIGN_OR_RETURN(float factor, number("factor", 1));
    iv->mutable_scale()->set_factor(factor);
  }
  if (op == "set") RETURN_IF_ERROR(tensor("value", iv->mutable_set()->mutable_value()));
  if (op == "add") {
    RETURN_IF_ERROR(tensor("value", iv->mutable_add()->mutable_value()));
    if (j.contains("coeff")) {
      ASSIGN_OR_RETURN(float coeff, number("coeff", 1));
      iv->mutable_add()->set_coeff(coeff);
    }
  }
  if (op == "patch") {
    if (!j.contains("source")) return Invalid(field("source"), "is required");
    ASSIGN_OR_RETURN(int source, Int(j["source"], field("source")));
    iv->mutable_patch()->set_source(source);
    if (j.contains("source_positions")) {
      RETURN_IF_ERROR(ToPositions(j["source_positions"], field("source_positions"),
                                  iv->mutable_patch()->mutable_source_positions()));
    }
  }
  if (op == "project") {
    RETURN_IF_ERROR(tensor("direction", iv->mutable_project()->mutable_direction()));
    ASSIGN_OR_RETURN(float target, number("target", 0));
    iv->mutable_project()->set_target(target);
  }
  if (op == "sae_clamp") {
    v1::SaeClampOp* s = iv->mutable_sae_clamp();
    RETURN_IF_ERROR(tensor("encoder", s->mutable_encoder()));
    RETURN_IF_ERROR(tensor("decoder", s->mutable_decoder()));
    if (j.contains("decoder_bias"))
      RETURN_IF_ERROR(tensor("decoder_bias", s->mutable_decoder_bias()));
    ASSIGN_OR_RETURN(float bias, number("encoder_bias", 0));
    ASSIGN_OR_RETURN(float threshold, number("threshold", 0));
    if (!j.contains("target")) return Invalid(field("target"), "is required");
    ASSIGN_OR_RETURN(float target, number("target", 0));
    s->set_encoder_bias(bias), s->set_threshold(threshold), s->set_target(target);
    if (j.contains("only_active")) {
      if (!j["only_active"].is_boolean())
        return Invalid(field("only_active"), "must be true or false");
      s->set_only_active(j["only_active"].get<bool>());
    }
  }
  if (op == "noise") {
    ASSIGN_OR_RETURN(float std, number("std", 0));
    iv->mutable_noise()->set_std(std);
    if (j.contains("seed")) {
      if (!j["seed"].is_number_unsigned()) return Invalid(field("seed"), "must be an integer >= 0");
      iv->mutable_noise()->set_seed(j["seed"].get<uint64_t>());
    }
  }
  return absl::OkStatus();
}

absl::Status ToIntervention(const json& j, const std::string& at, const std::string& base_dir,
                            v1::Intervention* iv) {
  if (!j.is_object()) return Invalid(at, "must be an object");
  if (!j.contains("op") || !j["op"].is_string() || !OpFields().count(j["op"].get<std::string>())) {
    return Invalid(at + ".op",
                   "must be one of zero, scale, set, add, patch, project, sae_clamp, noise");
  }
  const std::string op = j["op"].get<std::string>();
  const std::set<std::string>& extra = OpFields().at(op);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!kCommonFields.count(it.key()) && !extra.count(it.key())) {
      std::set<std::string> valid = kCommonFields;  // the selectors, then the op's own
      valid.insert(extra.begin(), extra.end());
      return Invalid(at, absl::StrCat("has unknown field ", QuoteUserText(it.key()), " for op ", op,
                                      " (its fields: ", absl::StrJoin(valid, ", "), ")"));
    }
  }
  if (!j.contains("hook") || !j["hook"].is_string()) return Invalid(at + ".hook", "is required");
  iv->set_hook(j["hook"].get<std::string>());
  if (j.contains("prompts"))
    RETURN_IF_ERROR(IntList(j["prompts"], at + ".prompts", iv->mutable_prompts()));
  if (j.contains("heads")) RETURN_IF_ERROR(IntList(j["heads"], at + ".heads", iv->mutable_heads()));
  if (j.contains("features")) {
    RETURN_IF_ERROR(IntList(j["features"], at + ".features", iv->mutable_features()));
  }
  if (j.contains("positions")) {
    RETURN_IF_ERROR(ToPositions(j["positions"], at + ".positions", iv->mutable_positions()));
  }
  if (j.contains("keys")) RETURN_IF_ERROR(ToPositions(j["keys"], at + ".keys", iv->mutable_keys()));
  return ToOp(j, op, at, base_dir, iv);
}

}  // namespace

absl::Status ParseInterventionsJson(std::string_view text, const std::string& base_dir,
                                    WireInterventions* out) {
  absl::StatusOr<json> j = ParseJson(text);
  if (!j.ok())
    return absl::InvalidArgumentError(absl::StrCat("interventions: ", j.status().message()));
  if (!j->is_array()) return absl::InvalidArgumentError("interventions: must be a JSON list");
  for (size_t i = 0; i < j->size(); ++i) {
    RETURN_IF_ERROR(
        ToIntervention((*j)[i], absl::StrCat("interventions[", i, "]"), base_dir, out->Add()));
  }
  return absl::OkStatus();
}

absl::Status ReadInterventionsFile(const std::string& path, WireInterventions* out) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  const size_t slash = path.rfind('/');
  const absl::Status s =
      ParseInterventionsJson(text, slash == std::string::npos ? "." : path.substr(0, slash), out);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

}  // namespace lensd
