// GPT-2 (model_type "gpt2"): learned positions, LayerNorm, Conv1D projections with fused QKV,
// biases everywhere, GELU-tanh, tied embeddings.
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

absl::Status ParseGpt2(const nlohmann::json& j, ModelConfig& c) {
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
  c.learned_positions = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  if (d % h != 0) return absl::InvalidArgumentError("n_embd must divide by n_head");
  c.d_head = c.d_model / c.n_heads;
  LayerSpec layer;
  layer.attention.scale = DefaultAttentionScale(c.d_head);
  layer.mlp = MlpKind::kDense;
  SetUniformLayers(c, layer);
  return absl::OkStatus();
}

}  // namespace

extern const FamilySpec kGpt2Family = {
    .model_type = "gpt2",
    .parse_config = ParseGpt2,
    .layer_prefix = "h.",
    .layer =
        {
            {"ln_1.weight", Layout::kLinear, {&W::ln1_w}},
            {"ln_1.bias", Layout::kLinear, {&W::ln1_b}},
            {"attn.c_attn.weight", Layout::kConv1D, {&W::wq, &W::wk, &W::wv}},
            {"attn.c_attn.bias", Layout::kLinear, {&W::bq, &W::bk, &W::bv}},
            {"attn.c_proj.weight", Layout::kConv1D, {&W::wo}},
            {"attn.c_proj.bias", Layout::kLinear, {&W::bo}},
            {"ln_2.weight", Layout::kLinear, {&W::ln2_w}},
            {"ln_2.bias", Layout::kLinear, {&W::ln2_b}},
            {"mlp.c_fc.weight", Layout::kConv1D, {&W::w_in}},
            {"mlp.c_fc.bias", Layout::kLinear, {&W::b_in}},
            {"mlp.c_proj.weight", Layout::kConv1D, {&W::w_out}},
            {"mlp.c_proj.bias", Layout::kLinear, {&W::b_out}},
        },
    .embed = "wte.weight",
    .position_embed = "wpe.weight",
    .final_norm = "ln_f",
    .unembed = "lm_head.weight",
    .nested_prefix = "transformer.",
};

}  // namespace lensd
