// The Llama layout (model_types "llama", "mistral", "qwen2"): rotary positions, RMSNorm,
// separate q/k/v/o projections with grouped-query attention, SwiGLU. They differ only in
// config: Qwen2 has q/k/v biases and a sliding window off unless use_sliding_window; Mistral's
// window is on when configured.
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/families/llama_layout.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

absl::Status ParseLlamaLike(const nlohmann::json& j, ModelConfig& c, bool qwen2) {
  ASSIGN_OR_RETURN(LayerSpec layer, ParseLlamaBlock(j, 1e-6, c));
  ASSIGN_OR_RETURN(bool attn_bias, JsonBool(j, "attention_bias", false));
  ASSIGN_OR_RETURN(c.mlp_bias, JsonBool(j, "mlp_bias", false));
  c.qkv_bias = attn_bias || qwen2;
  c.o_bias = attn_bias;
  ASSIGN_OR_RETURN(int window, JsonInt(j, "sliding_window", 0, 0, kMaxPositions));
  ASSIGN_OR_RETURN(bool use_window, JsonBool(j, "use_sliding_window", !qwen2));
  layer.attention.window = use_window ? window : 0;
  SetUniformLayers(c, layer);
  return absl::OkStatus();
}

absl::Status ParseLlama(const nlohmann::json& j, ModelConfig& c) {
  return ParseLlamaLike(j, c, false);
}
absl::Status ParseQwen2(const nlohmann::json& j, ModelConfig& c) {
  return ParseLlamaLike(j, c, true);
}

}  // namespace

absl::StatusOr<LayerSpec> ParseLlamaBlock(const nlohmann::json& j, double default_eps,
                                          ModelConfig& c) {
  RETURN_IF_ERROR(ParseRotaryGeometry(j, "silu", c));
  ASSIGN_OR_RETURN(c.norm_eps, JsonDouble(j, "rms_norm_eps", default_eps));
  LayerSpec layer;
  ASSIGN_OR_RETURN(layer.rope, ParseRope(j, 1.0, c.d_head));
  layer.attention = {DefaultAttentionScale(c.d_head), 0};
  layer.mlp = MlpKind::kGated;
  return layer;
}

std::vector<TensorSource> LlamaAttentionWith(std::initializer_list<TensorSource> rest) {
  std::vector<TensorSource> table = {
      {"self_attn.q_proj.weight", Layout::kLinear, {&W::wq}},
      {"self_attn.k_proj.weight", Layout::kLinear, {&W::wk}},
      {"self_attn.v_proj.weight", Layout::kLinear, {&W::wv}},
      {"self_attn.o_proj.weight", Layout::kLinear, {&W::wo}},
      {"self_attn.q_proj.bias", Layout::kLinear, {&W::bq}},
      {"self_attn.k_proj.bias", Layout::kLinear, {&W::bk}},
      {"self_attn.v_proj.bias", Layout::kLinear, {&W::bv}},
      {"self_attn.o_proj.bias", Layout::kLinear, {&W::bo}},
  };
  table.insert(table.end(), rest.begin(), rest.end());
  return table;
}

std::vector<TensorSource> LlamaLayerWith(std::initializer_list<TensorSource> norms) {
  std::vector<TensorSource> table = LlamaAttentionWith({
      {"mlp.gate_proj.weight", Layout::kLinear, {&W::w_in}},
      {"mlp.up_proj.weight", Layout::kLinear, {&W::w_up}},
      {"mlp.down_proj.weight", Layout::kLinear, {&W::w_out}},
      {"mlp.gate_proj.bias", Layout::kLinear, {&W::b_in}},
      {"mlp.up_proj.bias", Layout::kLinear, {&W::b_up}},
      {"mlp.down_proj.bias", Layout::kLinear, {&W::b_out}},
  });
  table.insert(table.end(), norms.begin(), norms.end());
  return table;
}

namespace {

FamilySpec LlamaLayout(const char* model_type,
                       absl::Status (*parse)(const nlohmann::json&, ModelConfig&)) {
  return {.model_type = model_type,
          .parse_config = parse,
          .layer = LlamaLayerWith({
              {"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
              {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
          })};
}

}  // namespace

extern const FamilySpec kLlamaFamily = LlamaLayout("llama", ParseLlama);
extern const FamilySpec kMistralFamily = LlamaLayout("mistral", ParseLlama);
extern const FamilySpec kQwen2Family = LlamaLayout("qwen2", ParseQwen2);

}  // namespace lensd
