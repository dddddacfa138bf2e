// A model family as data: how its config.json is read and how its checkpoint's tensors map
// onto the canonical weights (layer_tensors.h). One file per family under
// engine/model/families/ defines its FamilySpec; families/registry.cc lists them. Adding a
// family is one such file, one line in the registry, and its tests.
#ifndef LENSD_ENGINE_MODEL_FAMILY_H_
#define LENSD_ENGINE_MODEL_FAMILY_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/layer_tensors.h"
#include "nlohmann/json.hpp"

namespace lensd {

// How a checkpoint tensor is laid out relative to the canonical tensors it holds.
enum class Layout {
  kLinear,           // as nn.Linear stores it ([out, in], or a vector); parts stacked by rows
  kConv1D,           // GPT-2's Conv1D: stored transposed, [in, out]; parts stacked by columns
  kHeadInterleaved,  // GPT-NeoX's fused QKV: rows [heads, parts, d_head]
  kPerExpert,        // one nn.Linear tensor per expert, "{e}" in the name standing for its index;
                     // stacked by rows into the one canonical tensor
};

// One checkpoint tensor of a layer (`name` under the family's layer prefix) and the canonical
// tensors it holds, in order. Read when the model has its parts (HasLayerTensor); then it
// must be present.
struct TensorSource {
  const char* name;
  Layout layout;
  std::vector<LayerTensor> parts;
};

struct FamilySpec {
  const char* model_type;  // config.json's "model_type"
  // The family's own config.json fields (ParseModelConfig reads the common ones: model_type,
  // vocab_size, bos/eos ids, dtype). Errors name the field.
  absl::Status (*parse_config)(const nlohmann::json& j, ModelConfig& c);
  // Checkpoint names (the defaults: the Hugging Face Llama layout's, which most families
  // share). The layers' tensors, `layer` below, are under "<layer_prefix><L>.".
  std::string layer_prefix = "model.layers.";
  std::vector<TensorSource> layer;
  std::string embed = "model.embed_tokens.weight";  // [V, D]
  std::string position_embed;                   // [max_positions, D]; empty: rotary
  std::string final_norm = "model.norm";        // "<final_norm>.weight" (and ".bias": LayerNorm)
  std::string unembed = "lm_head.weight";       // [V, D]; the embedding when tied or absent
  // Checkpoints saved with the LM head nest the body under this (GPT-2: "transformer."):
  // each name is tried with it first, then without.
  std::string nested_prefix;
  // Added to every norm weight read (Gemma stores RMSNorm weights as w − 1 and multiplies
  // by 1 + w): the canonical weight is what multiplies the normalized value.
  float norm_weight_offset = 0.0f;
  // Multimodal configs: the language model's config.json fields live in this object
  // ("text_config"); only the text tower is loaded.
  const char* text_config = nullptr;
};

// config.json text parsed by `family` (the registry's for its model_type when null), for
// families defined outside the registry (tests). Errors as ParseModelConfig's.
absl::StatusOr<ModelConfig> ParseModelConfigAs(std::string_view json_text, std::string_view source,
                                               const FamilySpec* family);

// nullptr when no family has that model_type.
const FamilySpec* FindFamily(std::string_view model_type);
// "gpt2, llama, ...", for errors.
std::string SupportedModelTypes();

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_FAMILY_H_
