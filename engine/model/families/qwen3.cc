// Qwen3 (model_type "qwen3"): the Llama layout with an RMSNorm over each head's queries and
// keys before rotary (weights [head_dim]), an explicit head_dim, and a sliding window only on
// layers configured for it. Qwen3-MoE ("qwen3_moe"): the same attention, experts as MLPs.
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/families/llama_layout.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

// Older configs: sliding from layer max_window_layers on, when use_sliding_window.
bool Qwen3Sliding(const nlohmann::json& j, int layer) {
  const bool use = JsonBool(j, "use_sliding_window", false).value_or(false);
  return use && layer >= JsonInt(j, "max_window_layers", 0, 0, kMaxLayers).value_or(0);
}

absl::Status ParseQwen3(const nlohmann::json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(LayerSpec layer, ParseLlamaBlock(j, 1e-6, c));
  ASSIGN_OR_RETURN(bool attn_bias, JsonBool(j, "attention_bias", false));
  c.qkv_bias = c.o_bias = attn_bias;
  ASSIGN_OR_RETURN(int window, JsonInt(j, "sliding_window", 0, 0, kMaxPositions));
  ASSIGN_OR_RETURN(std::vector<bool> sliding, ParseSlidingLayers(j, c.n_layers, Qwen3Sliding));
  layer.qk_norm = QkNorm::kPerHead;
  SetUniformLayers(c, layer);
  for (int l = 0; l < c.n_layers; ++l) c.layers[l].attention.window = sliding[l] ? window : 0;
  return absl::OkStatus();
}

// Qwen3-MoE: Qwen3's attention with a mixture of experts (of moe_intermediate_size; top-k
// renormalised when norm_topk_prob) in every decoder_sparse_step-th layer not listed in
// mlp_only_layers, and gated MLPs of intermediate_size in the others (as Hugging Face's).
absl::Status ParseQwen3Moe(const nlohmann::json& j, ModelConfig& c) {
  RETURN_IF_ERROR(ParseQwen3(j, c));
  ASSIGN_OR_RETURN(MoeParams moe, ParseMoe(j, "num_local_experts", 128, false));
  ASSIGN_OR_RETURN(moe.d_expert, JsonInt(j, "moe_intermediate_size", 768, 1, kMaxDMlp));
  ASSIGN_OR_RETURN(int step, JsonInt(j, "decoder_sparse_step", 1, 1, kMaxLayers));
  std::vector<bool> dense(c.n_layers, false);
  if (JsonHas(j, "mlp_only_layers")) {
    const nlohmann::json& list = j.at("mlp_only_layers");
    for (size_t i = 0; list.is_array() && i < list.size(); ++i) {
      if (!list[i].is_number_integer() || list[i].get<int64_t>() < 0 ||
          list[i].get<int64_t>() >= c.n_layers) {
        return absl::InvalidArgumentError(
            absl::StrCat("mlp_only_layers[", i, "] must be a layer index below ", c.n_layers));
      }
      dense[list[i].get<int>()] = true;
    }
    if (!list.is_array()) return absl::InvalidArgumentError("mlp_only_layers must be a list");
  }
  for (int l = 0; l < c.n_layers; ++l) {
    if (dense[l] || (l + 1) % step != 0) continue;
    c.layers[l].mlp = MlpKind::kMoe, c.layers[l].moe = moe;
  }
  return absl::OkStatus();
}

}  // namespace

extern const FamilySpec kQwen3MoeFamily = {
    .model_type = "qwen3_moe",
    .parse_config = ParseQwen3Moe,
    .layer = LlamaAttentionWith({
        {"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
        {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
        {kQNormName, Layout::kLinear, {&W::q_norm_w}},
        {kKNormName, Layout::kLinear, {&W::k_norm_w}},
        {"mlp.gate.weight", Layout::kLinear, {&W::w_router}},
        // The dense layers (mlp_only_layers, decoder_sparse_step).
        {"mlp.gate_proj.weight", Layout::kLinear, {&W::w_in}},
        {"mlp.up_proj.weight", Layout::kLinear, {&W::w_up}},
        {"mlp.down_proj.weight", Layout::kLinear, {&W::w_out}},
        {"mlp.experts.{e}.gate_proj.weight", Layout::kPerExpert, {&W::w_in}},
        {"mlp.experts.{e}.up_proj.weight", Layout::kPerExpert, {&W::w_up}},
        {"mlp.experts.{e}.down_proj.weight", Layout::kPerExpert, {&W::w_out}},
    })};

extern const FamilySpec kQwen3Family = {
    .model_type = "qwen3",
    .parse_config = ParseQwen3,
    .layer = LlamaLayerWith({
        {"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
        {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
        {kQNormName, Layout::kLinear, {&W::q_norm_w}},
        {kKNormName, Layout::kLinear, {&W::k_norm_w}},
    })};

}  // namespace lensd
