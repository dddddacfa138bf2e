// Gemma 2 (model_type "gemma2"): the Llama projections with norms before and after attention
// and the MLP, RMSNorm weights stored as w − 1, embeddings scaled by √d_model, GeGLU
// (gelu-tanh), attention scaled by query_pre_attn_scalar^-½, attention-score and final-logit
// softcapping, and a sliding window on alternate layers.
#include <cmath>

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

absl::Status ParseGemma2(const nlohmann::json& j, ModelConfig& c) {
  RETURN_IF_ERROR(ParseRotaryGeometry(j, "gelu_pytorch_tanh", c));
  // Gemma 2's MLP reads hidden_activation (hidden_act is a leftover of Gemma 1's config).
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
  ASSIGN_OR_RETURN(std::vector<bool> sliding, ParseSlidingLayers(j, c.n_layers, Gemma2Sliding));
  LayerSpec layer;
  layer.norms = NormPlacement::kPreAndPost;
  ASSIGN_OR_RETURN(layer.rope, ParseRope(j, 1.0, c.d_head));
  layer.mlp = MlpKind::kGated;
  SetUniformLayers(c, layer);
  for (int l = 0; l < c.n_layers; ++l) {
    c.layers[l].attention = {static_cast<float>(std::pow(scalar, -0.5)), sliding[l] ? window : 0,
                             attn_softcap};
  }
  return absl::OkStatus();
}

}  // namespace

extern const FamilySpec kGemma2Family = {
    .model_type = "gemma2",
    .parse_config = ParseGemma2,
    .layer_prefix = "model.layers.",
    .layer = LlamaLayerWith({
        {"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
        {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln1_post_w}},
        {"pre_feedforward_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
        {"post_feedforward_layernorm.weight", Layout::kLinear, {&W::ln2_post_w}},
    }),
    .embed = "model.embed_tokens.weight",
    .position_embed = nullptr,
    .final_norm = "model.norm",
    .unembed = "lm_head.weight",
    .norm_weight_offset = 1.0f};

}  // namespace lensd
