// GPT-NeoX / Pythia (model_type "gpt_neox"): parallel residual, LayerNorm, partial rotary
// (rotary_pct, 25% by default), fused QKV interleaved per head, exact GELU.
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

absl::Status ParseNeox(const nlohmann::json& j, ModelConfig& c) {
  RETURN_IF_ERROR(ParseRotaryGeometry(j, "gelu", c));
  ASSIGN_OR_RETURN(c.norm_eps, JsonDouble(j, "layer_norm_eps", 1e-5));
  LayerSpec layer;
  ASSIGN_OR_RETURN(layer.parallel_residual, JsonBool(j, "use_parallel_residual", true));
  ASSIGN_OR_RETURN(bool bias, JsonBool(j, "attention_bias", true));
  c.norm = NormKind::kLayerNorm;
  c.qkv_bias = c.o_bias = bias;
  c.mlp_bias = true;
  ASSIGN_OR_RETURN(layer.rope, ParseRope(j, 0.25, c.d_head));
  layer.attention.scale = DefaultAttentionScale(c.d_head);
  layer.mlp = MlpKind::kDense;
  SetUniformLayers(c, layer);
  return absl::OkStatus();
}

}  // namespace

extern const FamilySpec kGptNeoxFamily = {
    .model_type = "gpt_neox",
    .parse_config = ParseNeox,
    .layer_prefix = "gpt_neox.layers.",
    .layer =
        {
            {"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
            {"input_layernorm.bias", Layout::kLinear, {&W::ln1_b}},
            {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
            {"post_attention_layernorm.bias", Layout::kLinear, {&W::ln2_b}},
            {"attention.query_key_value.weight", Layout::kHeadInterleaved,
             {&W::wq, &W::wk, &W::wv}},
            {"attention.query_key_value.bias", Layout::kHeadInterleaved, {&W::bq, &W::bk, &W::bv}},
            {"attention.dense.weight", Layout::kLinear, {&W::wo}},
            {"attention.dense.bias", Layout::kLinear, {&W::bo}},
            {"mlp.dense_h_to_4h.weight", Layout::kLinear, {&W::w_in}},
            {"mlp.dense_h_to_4h.bias", Layout::kLinear, {&W::b_in}},
            {"mlp.dense_4h_to_h.weight", Layout::kLinear, {&W::w_out}},
            {"mlp.dense_4h_to_h.bias", Layout::kLinear, {&W::b_out}},
        },
    .embed = "gpt_neox.embed_in.weight",
    .final_norm = "gpt_neox.final_layer_norm",
    .unembed = "embed_out.weight",
};

}  // namespace lensd
