// Mixtral (model_type "mixtral"): the Llama attention with a mixture-of-experts MLP
// ("block_sparse_moe": a router "gate" and experts w1 = gate, w3 = up, w2 = down), top-k
// experts per token renormalised to sum 1.
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/families/llama_layout.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

absl::Status ParseMixtral(const nlohmann::json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(LayerSpec layer, ParseLlamaBlock(j, 1e-5, c));
  ASSIGN_OR_RETURN(layer.attention.window, JsonInt(j, "sliding_window", 0, 0, kMaxPositions));
  ASSIGN_OR_RETURN(layer.moe, ParseMoe(j, "num_local_experts", 8, true));
  layer.moe.d_expert = c.d_mlp;
  layer.mlp = MlpKind::kMoe;
  SetUniformLayers(c, layer);
  return absl::OkStatus();
}

}  // namespace

extern const FamilySpec kMixtralFamily = {
    .model_type = "mixtral",
    .parse_config = ParseMixtral,
    .layer = LlamaAttentionWith({
        {"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
        {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
        {"block_sparse_moe.gate.weight", Layout::kLinear, {&W::w_router}},
        {"block_sparse_moe.experts.{e}.w1.weight", Layout::kPerExpert, {&W::w_in}},
        {"block_sparse_moe.experts.{e}.w3.weight", Layout::kPerExpert, {&W::w_up}},
        {"block_sparse_moe.experts.{e}.w2.weight", Layout::kPerExpert, {&W::w_out}},
    })};

}  // namespace lensd
