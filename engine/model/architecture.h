// What each layer of a model is, as data (gemma.cpp's LayerConfig is the model): norm
// placement, attention parameters (scale, window, softcap), q/k norms, rotary parameters and the
// MLP kind. The family parsers (engine/model/families) fill one LayerSpec per layer; the forward
// pass, hook enumeration, tensor presence and memory planning read them. Families that alternate
// layer kinds (sliding and global attention, a rope theta per kind) differ here only.
#ifndef LENSD_ENGINE_MODEL_ARCHITECTURE_H_
#define LENSD_ENGINE_MODEL_ARCHITECTURE_H_

#include <cmath>
#include <vector>

namespace lensd {

enum class RopeType { kDefault, kLinear, kLlama3, kLongRope };

struct RopeConfig {
  double theta = 10000.0;
  int rotary_dim = 0;  // leading dims of each head that rotate (partial rotary: < d_head)
  RopeType type = RopeType::kDefault;
  double factor = 1.0;  // linear and llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position = 8192;  // llama3; longrope: the longest "short" sequence
  // Longrope (Phi-3.5, Phi-4-mini): frequencies divided per pair by short_factor while the
  // sequence has at most original_max_position tokens, by long_factor beyond; rotated q and k
  // multiplied by attention_factor. A sequence's frequencies follow its whole length, so one
  // growing past original_max_position is recomputed (Model::RopeSwitch).
  std::vector<double> short_factor, long_factor;  // [rotary_dim / 2]
  double attention_factor = 1.0;
};

// Attention's knobs, as every backend takes them.
struct AttentionParams {
  float scale = 1.0f;  // multiplies q·k
  int window = 0;      // 0: every earlier key; else keys with q_pos − k_pos < window
  // > 0: scores = softcap · tanh(scale · q·k / softcap) before masking (Gemma 2).
  float softcap = 0.0f;
};

// q·k / √d_head: the scale of every family so far.
inline float DefaultAttentionScale(int d_head) {
  return 1.0f / std::sqrt(static_cast<float>(d_head));
}

enum class MlpKind {
  kDense,  // act(x·W_in + b_in)·W_out + b_out
  kGated,  // (act(x·W_gate) ⊙ x·W_up)·W_down (SwiGLU, GeGLU)
  kMoe,    // a router picks top_k gated experts per token; their outputs weighted and summed
};

// A mixture-of-experts MLP (MlpKind::kMoe): router softmax over `experts`, the `top_k` largest
// per token, renormalised to sum 1 when `normalize`; each expert is a gated MLP of d_mlp.
struct MoeParams {
  int experts = 0;
  int top_k = 0;
  bool normalize = false;
  int d_expert = 0;  // each expert's hidden width (ModelConfig::d_mlp is the dense layers')
};

// Where a block normalises: before each sublayer (GPT-2, Llama), before and after (Gemma 2/3:
// the sublayer's output is normalised by ln1_post / ln2_post before joining the residual), or
// after only (OLMo 2: the sublayers read the residual itself).
enum class NormPlacement { kPre, kPreAndPost, kPost };

inline bool HasPreNorms(NormPlacement p) { return p != NormPlacement::kPost; }
inline bool HasPostNorms(NormPlacement p) { return p != NormPlacement::kPre; }

// RMSNorm of the queries and keys after their projections, before rotary.
enum class QkNorm {
  kNone,
  kPerHead,  // over each head's d_head (Qwen3, Gemma 3): weights [d_head]
  kWhole,    // over the whole projection (OLMo 2): weights [H·d_head], [Hkv·d_head]
};

struct LayerSpec {
  NormPlacement norms = NormPlacement::kPre;
  // GPT-NeoX: attention and MLP both read the block's input (no resid_mid).
  bool parallel_residual = false;
  AttentionParams attention;
  QkNorm qk_norm = QkNorm::kNone;
  RopeConfig rope;  // rotary models (rotary_dim > 0)
  MlpKind mlp = MlpKind::kGated;
  MoeParams moe;  // kMoe only
};

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_ARCHITECTURE_H_
