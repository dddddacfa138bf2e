// OLMo 2 (model_type "olmo2"): the Llama layout with norms after attention and after the MLP
// instead of before them (the sublayers read the residual itself), and an RMSNorm over the
// whole query and key projections before rotary (weights [H·head_dim], [Hkv·head_dim]).
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/families/llama_layout.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

absl::Status ParseOlmo2(const nlohmann::json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(LayerSpec layer, ParseLlamaBlock(j, 1e-5, c));
  ASSIGN_OR_RETURN(bool attn_bias, JsonBool(j, "attention_bias", false));
  c.qkv_bias = c.o_bias = attn_bias;
  if (JsonHas(j, "clip_qkv")) {
    return absl::UnimplementedError("clip_qkv is not supported (OLMo 2 checkpoints have none)");
  }
  layer.norms = NormPlacement::kPost;
  layer.qk_norm = QkNorm::kWhole;
  SetUniformLayers(c, layer);
  return absl::OkStatus();
}

}  // namespace

extern const FamilySpec kOlmo2Family = {
    .model_type = "olmo2",
    .parse_config = ParseOlmo2,
    .layer = LlamaLayerWith({
        {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln1_post_w}},
        {"post_feedforward_layernorm.weight", Layout::kLinear, {&W::ln2_post_w}},
        {kQNormName, Layout::kLinear, {&W::q_norm_w}},
        {kKNormName, Layout::kLinear, {&W::k_norm_w}},
    })};

}  // namespace lensd
