// The canonical tensors of a transformer block, once: their shapes, when a model has them, how
// tensor parallelism splits them, how weight processing treats them and how random weights
// are drawn. Every family maps its checkpoint names onto these (engine/model/families), and
// everything that walks a layer's tensors (loading, slicing, processing, random weights,
// upload) walks this table.
#ifndef LENSD_ENGINE_MODEL_LAYER_TENSORS_H_
#define LENSD_ENGINE_MODEL_LAYER_TENSORS_H_

#include <span>

#include "engine/core/tensor.h"
#include "engine/model/config.h"

namespace lensd {

// Linear weights [out, in] as nn.Linear stores them; an absent tensor is an empty Buffer (no
// bias, or an identity norm after weight processing).
struct LayerWeights {
  Buffer ln1_w, ln1_b;  // [D]
  Buffer wq, bq;        // [H*dh, D], [H*dh]
  Buffer wk, bk;        // [Hkv*dh, D], [Hkv*dh]
  Buffer wv, bv;        // [Hkv*dh, D], [Hkv*dh]
  Buffer wo, bo;        // [D, H*dh], [D]
  Buffer ln2_w, ln2_b;  // [D]
  Buffer w_in, b_in;    // [M, D] (the gate projection of gated MLPs), [M]
  Buffer w_up;          // [M, D] gated MLPs only
  Buffer b_up;          // [M] gated MLPs with mlp_bias only
  Buffer w_out, b_out;  // [D, M], [D]
  // Mixture of experts (MlpKind::kMoe): w_in, w_up [E·M, D] and w_out [E·D, M] hold the E
  // experts' matrices stacked by rows (expert e's rows from e·M, resp. e·D); the router:
  Buffer w_router;  // [E, D]
  // Norms of the sublayer outputs (NormPlacement::kPreAndPost, kPost): [D]
  Buffer ln1_post_w, ln1_post_b, ln2_post_w, ln2_post_b;
  // RMSNorm weights of queries and keys (LayerSpec::qk_norm): [dh] each per head, or
  // [H*dh], [Hkv*dh] over the whole projection.
  Buffer q_norm_w, k_norm_w;
};

using LayerTensor = Buffer LayerWeights::*;

// How tensor parallelism divides a tensor between ranks.
enum class TpSplit {
  kReplicated,  // every rank holds all of it (norms)
  kQueryRows,   // rows by query head
  kKvRows,      // rows by key/value head (replicated when there are fewer heads than ranks)
  kQueryCols,   // columns by query head (the output projection)
  kMlpRows,     // rows by MLP feature
  kMlpCols,     // columns by MLP feature
  kRankZero,    // added once after the all-reduce: rank 0 holds it, the others nothing
};

// What TransformerLens's weight processing does with a tensor (runtime/processing.cc).
enum class ProcessingRole {
  kNorm,            // a norm's weight or bias: folded into the matrices reading its output
  kPostNorm,        // a norm of a sublayer's output or of q/k: kept (TransformerLens folds
                    // pre-norms only)
  kReadsNorm1,      // a matrix reading ln1's output (with its bias): ln1 folds into it
  kReadsNorm2,      // a matrix reading ln2's output (with its bias): ln2 folds into it
  kWritesResidual,  // a matrix or bias adding to the residual stream: centred
  kOther,           // biases handled with their matrix, the value bias (folded into b_O)
};

// How RandomSource draws it (scaled like a trained model's initialisation).
enum class RandomInit {
  kNormWeight,  // 1 + N(0, 0.1²)
  kBias,        // N(0, 0.02²)
  kFanIn,       // N(0, 1/in): matrices
};

struct LayerTensorSpec {
  LayerTensor field;
  TpSplit split;
  ProcessingRole role;
  LayerTensor bias;      // a matrix's bias (kReadsNorm*: folding writes it), else nullptr
  RandomInit init;
  int random_stream;     // RandomSource: stream offset within the layer's streams
};

// Every layer tensor, in one fixed order (upload, slicing and byte counts follow it).
std::span<const LayerTensorSpec> LayerTensorSpecs();

// Whether layer `layer` of `c` has the tensor at all (biases, LayerNorm biases, the up
// projection of gated MLPs, pre- and post-norms by the layer's placement).
bool HasLayerTensor(const ModelConfig& c, int layer, LayerTensor field);

// Its full (unsliced) shape in layer `layer` of `c`.
Shape LayerTensorShape(const ModelConfig& c, int layer, LayerTensor field);

// A norm's weight (pre-, post- or q/k norm), which some checkpoints store as w − 1 (Gemma).
bool IsNormWeight(LayerTensor field);

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_LAYER_TENSORS_H_
