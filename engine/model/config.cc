#include "engine/model/config.h"

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/model/json_fields.h"
#include "nlohmann/json.hpp"

namespace lensd {
namespace {

using nlohmann::json;

// Ranges checked as each field is read (before any arithmetic on it); a model outside them is
// implausible and would overflow the size arithmetic of loading.
constexpr int64_t kMaxDModel = 1 << 20, kMaxVocab = 1 << 24, kMaxLayers = 4096;
constexpr int64_t kMaxDMlp = 1 << 22, kMaxHeads = 4096, kMaxHeadDim = 1 << 14;
constexpr int64_t kMaxPositions = 1 << 26;

absl::StatusOr<Family> ParseFamily(const json& j) {
  ASSIGN_OR_RETURN(std::string type, JsonString(j, "model_type", ""));
  if (type == "gpt2") return Family::kGpt2;
  if (type == "llama") return Family::kLlama;
  if (type == "mistral") return Family::kMistral;
  if (type == "qwen2") return Family::kQwen2;
  if (type == "gpt_neox") return Family::kGptNeox;
  return absl::UnimplementedError(absl::StrCat(
      "unsupported architecture model_type='", type,
      "' (supported: gpt2, llama, mistral, qwen2, gpt_neox)"));
}

absl::StatusOr<ActKind> ParseAct(const std::string& name) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
    return ActKind::kGeluTanh;
  }
  if (name == "gelu") return ActKind::kGeluErf;
  if (name == "silu" || name == "swish") return ActKind::kSilu;
  if (name == "relu") return ActKind::kRelu;
  return absl::UnimplementedError(absl::StrCat("unsupported activation '", name, "'"));
}

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

// Rope fields live either in `rope_parameters` (transformers 5) or at top level plus
// `rope_scaling` (classic). Both are read; rope_parameters wins where present.
absl::Status ParseRope(const json& j, double default_pct, ModelConfig& c) {
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
  c.rope.theta = theta;
  c.rope.rotary_dim = static_cast<int>(c.d_head * pct);
  if (c.rope.rotary_dim % 2 != 0 || c.rope.rotary_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rotary dimension ", c.rope.rotary_dim, " must be positive and even"));
  }
  ASSIGN_OR_RETURN(c.rope.factor, JsonDouble(s, "factor", 1.0));
  if (type == "default") {
    c.rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    c.rope.type = RopeType::kLinear;
  } else if (type == "llama3") {
    c.rope.type = RopeType::kLlama3;
    ASSIGN_OR_RETURN(c.rope.low_freq_factor, JsonDouble(s, "low_freq_factor", 1.0));
    ASSIGN_OR_RETURN(c.rope.high_freq_factor, JsonDouble(s, "high_freq_factor", 4.0));
    ASSIGN_OR_RETURN(c.rope.original_max_position,
                     JsonInt(s, "original_max_position_embeddings", 8192, 1, kMaxPositions));
    if (c.rope.high_freq_factor <= c.rope.low_freq_factor) {
      return absl::InvalidArgumentError("llama3 rope: high_freq_factor must exceed low_freq_factor");
    }
  } else {
    return absl::UnimplementedError(absl::StrCat("unsupported rope_type '", type, "'"));
  }
  if (c.rope.factor <= 0) return absl::InvalidArgumentError("rope factor must be positive");
  return absl::OkStatus();
}

absl::Status ParseGpt2(const json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(int d, JsonInt(j, "n_embd", 768, 1, kMaxDModel));
  ASSIGN_OR_RETURN(int h, JsonInt(j, "n_head", 12, 1, kMaxHeads));
  ASSIGN_OR_RETURN(int l, JsonInt(j, "n_layer", 12, 1, kMaxLayers));
  ASSIGN_OR_RETURN(int pos, JsonInt(j, "n_positions", 1024, 1, kMaxPositions));
  ASSIGN_OR_RETURN(int inner, JsonInt(j, "n_inner", int64_t{4} * d, 1, kMaxDMlp));
  ASSIGN_OR_RETURN(c.norm_eps, JsonDouble(j, "layer_norm_epsilon", 1e-5));
  ASSIGN_OR_RETURN(std::string act, JsonString(j, "activation_function", "gelu_new"));
  ASSIGN_OR_RETURN(c.act, ParseAct(act));
  ASSIGN_OR_RETURN(c.tied_embeddings, JsonBool(j, "tie_word_embeddings", true));
  c.d_model = d;
  c.n_heads = c.n_kv_heads = h;
  c.n_layers = l;
  c.max_positions = pos;
  c.d_mlp = inner;
  c.norm = NormKind::kLayerNorm;
  c.gated_mlp = false;
  c.learned_positions = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  if (d % h != 0) return absl::InvalidArgumentError("n_embd must divide by n_head");
  c.d_head = c.d_model / c.n_heads;
  return absl::OkStatus();
}

absl::Status ParseRotaryFamily(const json& j, ModelConfig& c) {
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
  const bool neox = c.family == Family::kGptNeox;
  ASSIGN_OR_RETURN(std::string act, JsonString(j, "hidden_act", neox ? "gelu" : "silu"));
  ASSIGN_OR_RETURN(c.act, ParseAct(act));
  ASSIGN_OR_RETURN(c.tied_embeddings, JsonBool(j, "tie_word_embeddings", false));
  if (neox) {
    ASSIGN_OR_RETURN(c.norm_eps, JsonDouble(j, "layer_norm_eps", 1e-5));
    ASSIGN_OR_RETURN(c.parallel_residual, JsonBool(j, "use_parallel_residual", true));
    ASSIGN_OR_RETURN(bool bias, JsonBool(j, "attention_bias", true));
    c.norm = NormKind::kLayerNorm;
    c.gated_mlp = false;
    c.qkv_bias = c.o_bias = bias;
    c.mlp_bias = true;
    return ParseRope(j, 0.25, c);
  }
  ASSIGN_OR_RETURN(c.norm_eps, JsonDouble(j, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(bool attn_bias, JsonBool(j, "attention_bias", false));
  ASSIGN_OR_RETURN(c.mlp_bias, JsonBool(j, "mlp_bias", false));
  c.qkv_bias = attn_bias || c.family == Family::kQwen2;
  c.o_bias = attn_bias;
  ASSIGN_OR_RETURN(int window, JsonInt(j, "sliding_window", 0, 0, kMaxPositions));
  ASSIGN_OR_RETURN(bool use_window, JsonBool(j, "use_sliding_window", c.family != Family::kQwen2));
  c.sliding_window = use_window ? window : 0;
  return ParseRope(j, 1.0, c);
}

absl::StatusOr<ModelConfig> ParseImpl(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("config is not a JSON object");
  ModelConfig c;
  ASSIGN_OR_RETURN(c.family, ParseFamily(j));
  if (c.family == Family::kGpt2) {
    RETURN_IF_ERROR(ParseGpt2(j, c));
  } else {
    RETURN_IF_ERROR(ParseRotaryFamily(j, c));
  }
  ASSIGN_OR_RETURN(c.vocab_size, JsonInt(j, "vocab_size", 0, 1, kMaxVocab));
  RETURN_IF_ERROR(ParseIds(j, c));
  ASSIGN_OR_RETURN(std::string dtype, JsonString(j, "torch_dtype", "float32"));
  ASSIGN_OR_RETURN(dtype, JsonString(j, "dtype", dtype));
  auto parsed = ParseFloatDType(dtype);
  c.dtype = parsed.ok() ? *parsed : DType::kF32;
  return c;
}

}  // namespace

std::string_view FamilyName(Family f) {
  switch (f) {
    case Family::kGpt2:
      return "gpt2";
    case Family::kLlama:
      return "llama";
    case Family::kMistral:
      return "mistral";
    case Family::kQwen2:
      return "qwen2";
    case Family::kGptNeox:
      return "gpt_neox";
  }
  return "?";
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source) {
  absl::StatusOr<json> j = ParseJson(json_text);
  if (!j.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": ", j.status().message()));
  }
  auto c = ParseImpl(*j);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(std::string(source), ": ", c.status().message()));
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseModelConfig(text, path);
}

}  // namespace lensd
