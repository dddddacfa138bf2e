// Architecture description derived from a Hugging Face config.json. One forward-pass
// implementation serves every family; they differ only by the fields below and the per-layer
// specs (architecture.h).
#ifndef LENSD_ENGINE_MODEL_CONFIG_H_
#define LENSD_ENGINE_MODEL_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"
#include "engine/model/architecture.h"

namespace lensd {

enum class NormKind { kLayerNorm, kRmsNorm };
enum class ActKind { kGeluTanh, kGeluErf, kSilu, kRelu };

struct ModelConfig {
  std::string model_type = "llama";  // config.json's model_type: the family (family.h)
  int d_model = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int d_head = 0;
  int d_mlp = 0;
  int vocab_size = 0;
  int max_positions = 0;
  NormKind norm = NormKind::kRmsNorm;
  double norm_eps = 1e-5;
  ActKind act = ActKind::kSilu;
  bool learned_positions = false;  // GPT-2; otherwise rotary
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  bool tied_embeddings = false;
  // Token embeddings are multiplied by this (Gemma: √d_model, rounded to float32).
  float embed_scale = 1.0f;
  // > 0: logits = softcap · tanh(logits / softcap) (Gemma 2).
  float final_softcap = 0.0f;
  std::vector<LayerSpec> layers;  // one per layer (architecture.h)
  int bos_id = -1;
  std::vector<int> eos_ids;
  DType dtype = DType::kF32;  // checkpoint dtype from config ("dtype" or "torch_dtype")
};

// Whether some layer's MLP is a mixture of experts.
bool HasMoe(const ModelConfig& c);

// 0, or the length past which a sequence's longrope layers take their long frequencies: K/V
// cached while it was at most this long must be recomputed once it grows past it. (Every
// longrope layer of a model has the same length: ParseModelConfig refuses others.)
int RopeSwitch(const ModelConfig& c);

// c.layers: n_layers copies of `spec` (every family so far has one kind of layer).
void SetUniformLayers(ModelConfig& c, const LayerSpec& spec);

// Parses config.json text. Errors name the offending field; `source` (a path) prefixes them.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_CONFIG_H_
