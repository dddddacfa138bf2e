// Phi-3 (model_type "phi3"): the Llama block with the query, key and value projections fused
// into one qkv_proj (rows [q; k; v]) and the gate and up projections into one gate_up_proj
// (rows [gate; up]); a sliding window when configured; long-context "longrope" (or "su") rope
// scaling as Phi-3.5 and Phi-4-mini configure it (config.cc's ParseRope).
#include "engine/core/status.h"
#include "engine/model/config_parse.h"
#include "engine/model/families/llama_layout.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

using W = LayerWeights;

absl::Status ParsePhi3(const nlohmann::json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(LayerSpec layer, ParseLlamaBlock(j, 1e-5, c));
  ASSIGN_OR_RETURN(layer.attention.window, JsonInt(j, "sliding_window", 0, 0, kMaxPositions));
  SetUniformLayers(c, layer);
  return absl::OkStatus();
}

}  // namespace

extern const FamilySpec kPhi3Family = {
    .model_type = "phi3",
    .parse_config = ParsePhi3,
    .layer = {{"input_layernorm.weight", Layout::kLinear, {&W::ln1_w}},
              {"post_attention_layernorm.weight", Layout::kLinear, {&W::ln2_w}},
              {"self_attn.qkv_proj.weight", Layout::kLinear, {&W::wq, &W::wk, &W::wv}},
              {"self_attn.o_proj.weight", Layout::kLinear, {&W::wo}},
              {"mlp.gate_up_proj.weight", Layout::kLinear, {&W::w_in, &W::w_up}},
              {"mlp.down_proj.weight", Layout::kLinear, {&W::w_out}}}};

}  // namespace lensd
