// Canonical weights: every family's checkpoint is mapped to one layout (layer_tensors.h;
// linear weights [out, in] as nn.Linear stores them; fused QKV split; Conv1D transposed) by
// its tensor table (family.h). An absent optional tensor is an empty Buffer.
#ifndef LENSD_ENGINE_MODEL_WEIGHTS_H_
#define LENSD_ENGINE_MODEL_WEIGHTS_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/model/config.h"
#include "engine/model/layer_tensors.h"
#include "engine/model/safetensors.h"

namespace lensd {

// How a weight lives on a device: matrices (rank 2: projections, embeddings, unembedding)
// in the model dtype — what GEMM reads and decode is bound by — and vectors (norm weights,
// biases) in float32.
inline DType StorageDType(const Shape& shape, DType model_dtype) {
  return shape.rank == 2 ? model_dtype : DType::kF32;
}

struct EmbedWeights {
  Buffer w_e;    // [V, D]
  Buffer w_pos;  // [max_positions, D] learned positions only
};

struct HeadWeights {
  Buffer lnf_w, lnf_b;  // [D]
  Buffer w_u, b_u;      // [V, D], [V]
};

// Produces host float32 canonical weights one piece at a time, so a loader never holds more
// than one layer beyond what it has already placed on devices.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual absl::StatusOr<EmbedWeights> Embed() const = 0;
  virtual absl::StatusOr<LayerWeights> Layer(int layer) const = 0;
  virtual absl::StatusOr<HeadWeights> Head() const = 0;
};

// Reads a Hugging Face directory (config.json + safetensors). Tensor shapes are checked
// against the config; errors name the file and tensor.
absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpointSource(const std::string& dir);
// The same through `family` (family.h), whatever the config's model_type: a family defined
// outside the registry, e.g. by a test.
struct FamilySpec;
absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpointSource(const std::string& dir,
                                                                   const FamilySpec& family);

// Deterministic random weights for `config` (seeded), scaled like a trained model's init.
std::unique_ptr<WeightSource> MakeRandomSource(const ModelConfig& config, uint64_t seed);

// The built-in model's architecture: Llama-style, byte vocabulary (259), 4 layers, d 128.
ModelConfig BuiltinConfig();
// Built-in architectures by name: "tiny" (BuiltinConfig), "gpt2-small" (GPT-2 small's
// shape: 12 layers, d 768, vocab 50257), "llama-1b" (Llama-3.2-1B's), "mixtral-mini" and
// "dense-mini" (a mixture of experts and its dense twin of equal active parameters) and
// "gemma2-2b" (Gemma-2-2B's), for benchmarks without a checkpoint on disk.
absl::StatusOr<ModelConfig> BuiltinConfigNamed(std::string_view name);

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_WEIGHTS_H_
