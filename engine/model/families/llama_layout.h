// What the families descended from Llama share: the block's config fields (ParseLlamaBlock)
// and the projections' checkpoint names ("self_attn.{q,k,v,o}_proj", "mlp.{gate,up,down}_proj",
// with their optional biases); each family adds its own norms, or a mixture of experts instead
// of the MLP (llama.cc, qwen3.cc, olmo2.cc, phi3.cc, gemma.cc, mixtral.cc).
#ifndef LENSD_ENGINE_MODEL_FAMILIES_LLAMA_LAYOUT_H_
#define LENSD_ENGINE_MODEL_FAMILIES_LLAMA_LAYOUT_H_

#include <initializer_list>
#include <vector>

#include "engine/model/family.h"

namespace lensd {

// The block the Llama-descended families start from: the rotary geometry (hidden_act default
// silu, head_dim, tied embeddings), RMSNorm with rms_norm_eps (`default_eps` when absent), the
// rope parameters, attention scaled by 1/√head_dim over every earlier key, a gated MLP. The
// family then sets what differs (window, biases, norms, q/k norm, experts).
absl::StatusOr<LayerSpec> ParseLlamaBlock(const nlohmann::json& j, double default_eps,
                                          ModelConfig& c);

// The Llama attention projections followed by `rest` (norms, a mixture of experts).
std::vector<TensorSource> LlamaAttentionWith(std::initializer_list<TensorSource> rest);
// The Llama attention and MLP projections followed by `norms`.
std::vector<TensorSource> LlamaLayerWith(std::initializer_list<TensorSource> norms);

// "self_attn.q_norm.weight", "self_attn.k_norm.weight" (Qwen3, OLMo 2, Gemma 3).
inline constexpr const char* kQNormName = "self_attn.q_norm.weight";
inline constexpr const char* kKNormName = "self_attn.k_norm.weight";

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_FAMILIES_LLAMA_LAYOUT_H_
