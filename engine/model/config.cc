#include "engine/model/config.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"
#include "nlohmann/json.hpp"

namespace lensd {

using nlohmann::json;

absl::StatusOr<ActKind> ParseAct(const std::string& name) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
    return ActKind::kGeluTanh;
  }
  if (name == "gelu") return ActKind::kGeluErf;
  if (name == "silu" || name == "swish") return ActKind::kSilu;
  if (name == "relu") return ActKind::kRelu;
  return absl::UnimplementedError(absl::StrCat("unsupported activation '", name, "'"));
}

namespace {

absl::Status ParseIds(const json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(c.bos_id, JsonInt(j, "bos_token_id", -1, -1, kMaxVocab));
  if (JsonHas(j, "eos_token_id")) {
    const json& e = j.at("eos_token_id");
    if (e.is_array()) {
      for (const auto& x : e) {
        ASSIGN_OR_RETURN(int eos, JsonInt(json{{"eos_token_id", x}}, "eos_token_id", -1, -1,
                                          kMaxVocab));
        c.eos_ids.push_back(eos);
      }
    } else {
      ASSIGN_OR_RETURN(int eos, JsonInt(j, "eos_token_id", -1, -1, kMaxVocab));
      c.eos_ids.push_back(eos);
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// rotary_dim / 2 positive numbers under `key` of the rope parameters.
absl::StatusOr<std::vector<double>> RopeFactors(const json& s, const char* key, int n) {
  const bool ok =
      JsonHas(s, key) && s.at(key).is_array() && static_cast<int>(s.at(key).size()) == n;
  std::vector<double> out;
  for (size_t i = 0; ok && i < s.at(key).size(); ++i) {
    if (s.at(key)[i].is_number() && s.at(key)[i].get<double>() > 0) {
      out.push_back(s.at(key)[i].get<double>());
    }
  }
  if (static_cast<int>(out.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "longrope: ", key, " must be a list of rotary_dim / 2 = ", n, " positive numbers"));
  }
  return out;
}

// Hugging Face's longrope: the pretraining length (in the rope parameters, else top level),
// the factor (default: max_position_embeddings / that length) and the attention factor
// (default: sqrt(1 + ln factor / ln length), 1 when factor <= 1).
absl::Status ParseLongRope(const json& j, const json& s, RopeConfig& rope) {
  rope.type = RopeType::kLongRope;
  ASSIGN_OR_RETURN(int original,
                   JsonInt(j, "original_max_position_embeddings", 0, 0, kMaxPositions));
  ASSIGN_OR_RETURN(original,
                   JsonInt(s, "original_max_position_embeddings", original, 0, kMaxPositions));
  if (original < 2) {
    return absl::InvalidArgumentError(
        "longrope needs original_max_position_embeddings (at least 2)");
  }
  rope.original_max_position = original;
  ASSIGN_OR_RETURN(int max_pos, JsonInt(j, "max_position_embeddings", original, 1, kMaxPositions));
  ASSIGN_OR_RETURN(rope.factor, JsonDouble(s, "factor", static_cast<double>(max_pos) / original));
  const double attention =
      rope.factor <= 1.0
          ? 1.0
          : std::sqrt(1.0 + std::log(rope.factor) / std::log(static_cast<double>(original)));
  ASSIGN_OR_RETURN(rope.attention_factor, JsonDouble(s, "attention_factor", attention));
  ASSIGN_OR_RETURN(rope.short_factor, RopeFactors(s, "short_factor", rope.rotary_dim / 2));
  ASSIGN_OR_RETURN(rope.long_factor, RopeFactors(s, "long_factor", rope.rotary_dim / 2));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RopeConfig> ParseRope(const json& j, double default_pct, int d_head) {
  const json empty = json::object();
  const json& params = JsonHas(j, "rope_parameters") ? j.at("rope_parameters") : empty;
  const json& scaling = JsonHas(j, "rope_scaling") ? j.at("rope_scaling") : empty;
  const json& s = params.empty() ? scaling : params;
  ASSIGN_OR_RETURN(double theta, JsonDouble(j, "rope_theta", 10000.0));
  ASSIGN_OR_RETURN(theta, JsonDouble(j, "rotary_emb_base", theta));
  ASSIGN_OR_RETURN(theta, JsonDouble(params, "rope_theta", theta));
  ASSIGN_OR_RETURN(double pct, JsonDouble(j, "rotary_pct", default_pct));
  ASSIGN_OR_RETURN(pct, JsonDouble(j, "partial_rotary_factor", pct));
  ASSIGN_OR_RETURN(pct, JsonDouble(params, "partial_rotary_factor", pct));
  ASSIGN_OR_RETURN(std::string type, JsonString(s, "type", "default"));
  ASSIGN_OR_RETURN(type, JsonString(s, "rope_type", type));
  if (!(pct > 0 && pct <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("partial_rotary_factor / rotary_pct = ", pct, " must be in (0, 1]"));
  }
  RopeConfig rope;
  rope.theta = theta;
  rope.rotary_dim = static_cast<int>(d_head * pct);
  if (rope.rotary_dim % 2 != 0 || rope.rotary_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rotary dimension ", rope.rotary_dim, " must be positive and even"));
  }
  ASSIGN_OR_RETURN(rope.factor, JsonDouble(s, "factor", 1.0));
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.type = RopeType::kLinear;
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    ASSIGN_OR_RETURN(rope.low_freq_factor, JsonDouble(s, "low_freq_factor", 1.0));
    ASSIGN_OR_RETURN(rope.high_freq_factor, JsonDouble(s, "high_freq_factor", 4.0));
    ASSIGN_OR_RETURN(rope.original_max_position,
                     JsonInt(s, "original_max_position_embeddings", 8192, 1, kMaxPositions));
    if (rope.high_freq_factor <= rope.low_freq_factor) {
      return absl::InvalidArgumentError("llama3 rope: high_freq_factor must exceed low_freq_factor");
    }
  } else if (type == "longrope" || type == "su") {  // "su": Phi-3's earlier name
    RETURN_IF_ERROR(ParseLongRope(j, s, rope));
  } else {
    return absl::UnimplementedError(absl::StrCat("unsupported rope_type '", type, "'"));
  }
  if (rope.factor <= 0) return absl::InvalidArgumentError("rope factor must be positive");
  return rope;
}

absl::StatusOr<std::vector<bool>> ParseSlidingLayers(const json& j, int n_layers,
                                                     bool (*fallback)(const json& j, int layer)) {
  std::vector<bool> sliding(n_layers);
  if (!JsonHas(j, "layer_types")) {
    for (int l = 0; l < n_layers; ++l) sliding[l] = fallback(j, l);
    return sliding;
  }
  const json& types = j.at("layer_types");
  if (!types.is_array() || static_cast<int>(types.size()) != n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer_types must be a list of num_hidden_layers (", n_layers, ") names"));
  }
  for (int l = 0; l < n_layers; ++l) {
    const std::string type = types[l].is_string() ? types[l].get<std::string>() : "";
    if (type != "sliding_attention" && type != "full_attention") {
      return absl::UnimplementedError(
          absl::StrCat("layer_types[", l, "] = ", types[l].dump().substr(0, 64),
                       ": supported are \"sliding_attention\" and \"full_attention\""));
    }
    sliding[l] = type == "sliding_attention";
  }
  return sliding;
}

absl::StatusOr<MoeParams> ParseMoe(const json& j, const char* experts_key, int default_experts,
                                   bool normalize) {
  MoeParams moe;
  ASSIGN_OR_RETURN(moe.experts, JsonInt(j, "num_experts", default_experts, 1, 1 << 16));
  ASSIGN_OR_RETURN(moe.experts, JsonInt(j, experts_key, moe.experts, 1, 1 << 16));
  ASSIGN_OR_RETURN(moe.top_k, JsonInt(j, "num_experts_per_tok", 2, 1, moe.experts));
  ASSIGN_OR_RETURN(moe.normalize, JsonBool(j, "norm_topk_prob", normalize));
  for (const char* key : {"shared_expert_intermediate_size", "n_shared_experts"}) {
    ASSIGN_OR_RETURN(int shared, JsonInt(j, key, 0, 0, kMaxDMlp));
    if (shared > 0) {
      return absl::UnimplementedError(
          absl::StrCat(key, " = ", shared, ": shared experts are not supported yet"));
    }
  }
  return moe;
}

bool HasMoe(const ModelConfig& c) {
  return std::any_of(c.layers.begin(), c.layers.end(),
                     [](const LayerSpec& l) { return l.mlp == MlpKind::kMoe; });
}

int RopeSwitch(const ModelConfig& c) {
  int at = 0;
  for (const LayerSpec& l : c.layers) {
    if (l.rope.type != RopeType::kLongRope) continue;
    at = at == 0 ? l.rope.original_max_position : std::min(at, l.rope.original_max_position);
  }
  return at;
}

void SetUniformLayers(ModelConfig& c, const LayerSpec& spec) { c.layers.assign(c.n_layers, spec); }

absl::Status ParseRotaryGeometry(const json& j, const char* default_act, ModelConfig& c) {
  ASSIGN_OR_RETURN(int d, JsonInt(j, "hidden_size", 0, 1, kMaxDModel));
  ASSIGN_OR_RETURN(int h, JsonInt(j, "num_attention_heads", 0, 1, kMaxHeads));
  ASSIGN_OR_RETURN(int kv, JsonInt(j, "num_key_value_heads", h, 1, kMaxHeads));
  ASSIGN_OR_RETURN(int l, JsonInt(j, "num_hidden_layers", 0, 1, kMaxLayers));
  ASSIGN_OR_RETURN(int m, JsonInt(j, "intermediate_size", 0, 1, kMaxDMlp));
  ASSIGN_OR_RETURN(int pos, JsonInt(j, "max_position_embeddings", 2048, 1, kMaxPositions));
  if (h % kv != 0) {
    return absl::InvalidArgumentError(
        "num_attention_heads must be divisible by num_key_value_heads");
  }
  ASSIGN_OR_RETURN(int dh, JsonInt(j, "head_dim", d / h, 1, kMaxHeadDim));
  c.d_model = d;
  c.n_heads = h;
  c.n_kv_heads = kv;
  c.n_layers = l;
  c.d_mlp = m;
  c.max_positions = pos;
  c.d_head = dh;
  ASSIGN_OR_RETURN(std::string act, JsonString(j, "hidden_act", default_act));
  ASSIGN_OR_RETURN(c.act, ParseAct(act));
  ASSIGN_OR_RETURN(c.tied_embeddings, JsonBool(j, "tie_word_embeddings", false));
  return absl::OkStatus();
}

namespace {

// `family`: the registry's for the config's model_type when null.
absl::StatusOr<ModelConfig> ParseImpl(const json& j, const FamilySpec* family) {
  if (!j.is_object()) return absl::InvalidArgumentError("config is not a JSON object");
  ModelConfig c;
  ASSIGN_OR_RETURN(c.model_type, JsonString(j, "model_type", ""));
  if (family == nullptr) family = FindFamily(c.model_type);
  if (family == nullptr) {
    return absl::UnimplementedError(absl::StrCat("unsupported architecture model_type='",
                                                 c.model_type, "' (supported: ",
                                                 SupportedModelTypes(), ")"));
  }
  const char* key = family->text_config;
  if (key != nullptr && !(JsonHas(j, key) && j.at(key).is_object())) {
    return absl::InvalidArgumentError(absl::StrCat("missing object '", key, "'"));
  }
  const json& text = key != nullptr ? j.at(key) : j;  // the language model's fields
  RETURN_IF_ERROR(family->parse_config(text, c));
  for (const LayerSpec& l : c.layers) {
    if (l.rope.type == RopeType::kLongRope && l.rope.original_max_position != RopeSwitch(c)) {
      return absl::UnimplementedError(
          "longrope layers with different original_max_position_embeddings");
    }
  }
  ASSIGN_OR_RETURN(c.vocab_size, JsonInt(text, "vocab_size", 0, 1, kMaxVocab));
  RETURN_IF_ERROR(ParseIds(text, c));
  if (&text != &j && c.bos_id < 0 && c.eos_ids.empty()) RETURN_IF_ERROR(ParseIds(j, c));
  ASSIGN_OR_RETURN(std::string dtype, JsonString(j, "torch_dtype", "float32"));
  ASSIGN_OR_RETURN(dtype, JsonString(j, "dtype", dtype));
  ASSIGN_OR_RETURN(dtype, JsonString(text, "dtype", dtype));
  auto parsed = ParseFloatDType(dtype);
  c.dtype = parsed.ok() ? *parsed : DType::kF32;
  return c;
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfigAs(std::string_view json_text, std::string_view source,
                                               const FamilySpec* family) {
  const std::string where(source);
  absl::StatusOr<json> j = ParseJson(json_text);
  if (!j.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", j.status().message()));
  auto c = ParseImpl(*j, family);
  if (!c.ok()) return absl::Status(c.status().code(), absl::StrCat(where, ": ", c.status().message()));
  return c;
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source) {
  return ParseModelConfigAs(json_text, source, nullptr);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseModelConfig(text, path);
}

}  // namespace lensd
