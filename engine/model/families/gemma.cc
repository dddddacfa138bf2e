// Gemma 2 ("gemma2") and Gemma 3's text model ("gemma3_text"): the Llama projections with
// norms before and after attention and the MLP, RMSNorm weights stored as w − 1, embeddings
// scaled by √d_model, GeGLU (gelu-tanh), attention scaled by query_pre_attn_scalar^-½.
// Gemma 2: attention-score and final-logit softcapping, a sliding window on alternate layers.
// Gemma 3: per-head q/k RMSNorm, five local layers to one global, each kind with its own
// rotary base (global layers may scale theirs linearly).
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/families/llama_layout.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

// Older configs: layers 0, 2, 4, ... slide.
bool Gemma2Sliding(const nlohmann::json&, int layer) { return layer % 2 == 0; }

// A softcap field: absent or null means none; else it must be positive.
absl::StatusOr<float> ParseSoftcap(const nlohmann::json& j, const char* key) {
  ASSIGN_OR_RETURN(double cap, JsonDouble(j, key, 0.0));
  if (JsonHas(j, key) && !(cap > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(key, " = ", cap, " must be positive"));
  }
  return static_cast<float>(cap);
}

// What Gemma 2 and Gemma 3 share: geometry, GeGLU, tied embeddings scaled by √d_model, the
// attention scale and softcaps, pre- and post-norms; `sliding` (per layer) from layer_types or
// the family's older rule.
absl::StatusOr<std::vector<bool>> ParseGemmaCommon(const nlohmann::json& j, ModelConfig& c,
                                                   bool (*sliding_fallback)(const nlohmann::json&,
                                                                            int)) {
  RETURN_IF_ERROR(ParseRotaryGeometry(j, "gelu_pytorch_tanh", c));
  // Gemma's MLP reads hidden_activation (hidden_act is a leftover of Gemma 1's config).
  ASSIGN_OR_RETURN(std::string act, JsonString(j, "hidden_activation", "gelu_pytorch_tanh"));
  ASSIGN_OR_RETURN(c.act, ParseAct(act));
  ASSIGN_OR_RETURN(c.tied_embeddings, JsonBool(j, "tie_word_embeddings", true));
  ASSIGN_OR_RETURN(c.norm_eps, JsonDouble(j, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(bool attn_bias, JsonBool(j, "attention_bias", false));
  c.qkv_bias = c.o_bias = attn_bias;
  ASSIGN_OR_RETURN(bool bidirectional, JsonBool(j, "use_bidirectional_attention", false));
  if (bidirectional) {
    return absl::UnimplementedError("use_bidirectional_attention is not supported (causal only)");
  }
  c.embed_scale = static_cast<float>(std::sqrt(static_cast<double>(c.d_model)));
  ASSIGN_OR_RETURN(c.final_softcap, ParseSoftcap(j, "final_logit_softcapping"));
  ASSIGN_OR_RETURN(float attn_softcap, ParseSoftcap(j, "attn_logit_softcapping"));
  ASSIGN_OR_RETURN(double scalar, JsonDouble(j, "query_pre_attn_scalar", 256.0));
  if (!(scalar > 0)) return absl::InvalidArgumentError("query_pre_attn_scalar must be positive");
  ASSIGN_OR_RETURN(int window, JsonInt(j, "sliding_window", 4096, 1, kMaxPositions));
  ASSIGN_OR_RETURN(std::vector<bool> sliding, ParseSlidingLayers(j, c.n_layers, sliding_fallback));
  LayerSpec layer;
  layer.norms = NormPlacement::kPreAndPost;
  layer.mlp = MlpKind::kGated;
  SetUniformLayers(c, layer);
  for (int l = 0; l < c.n_layers; ++l) {
    c.layers[l].attention = {static_cast<float>(std::pow(scalar, -0.5)), sliding[l] ? window : 0,
                             attn_softcap};
  }
  return sliding;
}

absl::Status ParseGemma2(const nlohmann::json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(std::vector<bool> sliding, ParseGemmaCommon(j, c, Gemma2Sliding));
  ASSIGN_OR_RETURN(RopeConfig rope, ParseRope(j, 1.0, c.d_head));
  for (LayerSpec& layer : c.layers) layer.rope = rope;
  return absl::OkStatus();
}

// Older Gemma 3 configs: every sliding_window_pattern-th layer (1-based) is global.
bool Gemma3Sliding(const nlohmann::json& j, int layer) {
  int pattern = JsonInt(j, "_sliding_window_pattern", 6, 1, kMaxLayers).value_or(6);
  pattern = JsonInt(j, "sliding_window_pattern", pattern, 1, kMaxLayers).value_or(pattern);
  return (layer + 1) % pattern != 0;
}

// Gemma 3's rotary parameters of a layer kind: rope_parameters keyed by layer type
// (transformers 5), or rope_theta and rope_scaling for global layers and
// rope_local_base_freq for local ones (older configs).
absl::StatusOr<RopeConfig> Gemma3Rope(const nlohmann::json& j, bool sliding, int d_head) {
  const char* kind = sliding ? "sliding_attention" : "full_attention";
  if (JsonHas(j, "rope_parameters") && j.at("rope_parameters").is_object() &&
      j.at("rope_parameters").contains(kind)) {
    nlohmann::json one = j;
    one["rope_parameters"] = j.at("rope_parameters").at(kind);
    return ParseRope(one, 1.0, d_head);
  }
  if (!sliding) return ParseRope(j, 1.0, d_head);
  ASSIGN_OR_RETURN(double theta, JsonDouble(j, "rope_local_base_freq", 10000.0));
  return ParseRope(nlohmann::json{{"rope_theta", theta}}, 1.0, d_head);
}

absl::Status ParseGemma3Text(const nlohmann::json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(std::vector<bool> sliding, ParseGemmaCommon(j, c, Gemma3Sliding));
  ASSIGN_OR_RETURN(RopeConfig local, Gemma3Rope(j, true, c.d_head));
  ASSIGN_OR_RETURN(RopeConfig global, Gemma3Rope(j, false, c.d_head));
  for (int l = 0; l < c.n_layers; ++l) {
    c.layers[l].rope = sliding[l] ? local : global;
    c.layers[l].qk_norm = QkNorm::kPerHead;
  }
  return absl::OkStatus();
}

// `body`: where the language model's tensors live ("model." for the text models,
// "language_model.model." in the multimodal gemma3 checkpoints).
FamilySpec GemmaLayout(const char* model_type,
                       absl::Status (*parse)(const nlohmann::json&, ModelConfig&),
                       const std::string& body = "model.", const char* text_config = nullptr) {
  return {.model_type = model_type,
          .parse_config = parse,
          .layer_prefix = body + "layers.",
          .layer = LlamaLayerWith({
              {"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
              {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln1_post_w}},
              {"pre_feedforward_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
              {"post_feedforward_layernorm.weight", Layout::kLinear, {&W::ln2_post_w}},
              {kQNormName, Layout::kLinear, {&W::q_norm_w}},
              {kKNormName, Layout::kLinear, {&W::k_norm_w}},
          }),
          .embed = body + "embed_tokens.weight",
          .final_norm = body + "norm",
          .unembed = text_config == nullptr ? "lm_head.weight" : "language_model.lm_head.weight",
          .norm_weight_offset = 1.0f,
          .text_config = text_config};
}

}  // namespace

extern const FamilySpec kGemma2Family = GemmaLayout("gemma2", ParseGemma2);
extern const FamilySpec kGemma3TextFamily = GemmaLayout("gemma3_text", ParseGemma3Text);
// Gemma 3's multimodal checkpoints: the text tower only (the vision tower is not loaded).
extern const FamilySpec kGemma3Family =
    GemmaLayout("gemma3", ParseGemma3Text, "language_model.model.", "text_config");

}  // namespace lensd
