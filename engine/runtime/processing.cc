#include "engine/runtime/processing.h"

#include "absl/strings/str_cat.h"

namespace lensd {
namespace {

// W[N,D] <- W·diag(ln_w); bias[N] += W·ln_b (when folding biases); optionally centre each
// row over D (the input is centred by LayerNorm, so this changes nothing downstream).
void FoldInto(const Buffer& ln_w, const Buffer& ln_b, bool fold_bias, bool center, Buffer& w,
              Buffer& bias) {
  const int64_t N = w.shape()[0], D = w.shape()[1];
  float* W = w.As<float>();
  if (fold_bias && !ln_b.empty()) {
    if (bias.empty()) bias = Buffer::Host(DType::kF32, {N});
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t d = 0; d < D; ++d) acc += double{W[n * D + d]} * ln_b.As<float>()[d];
      bias.As<float>()[n] += static_cast<float>(acc);
    }
  }
  for (int64_t n = 0; n < N; ++n) {
    double mean = 0;
    for (int64_t d = 0; d < D; ++d) {
      if (!ln_w.empty()) W[n * D + d] *= ln_w.As<float>()[d];
      mean += W[n * D + d];
    }
    mean /= D;
    if (!center) continue;
    for (int64_t d = 0; d < D; ++d) W[n * D + d] -= static_cast<float>(mean);
  }
}

// Centres every row of a [rows, D] matrix over D (embeddings: each written vector).
void CenterRows(Buffer& m) {
  if (m.empty()) return;
  const int64_t R = m.shape().rank == 1 ? 1 : m.shape()[0];
  const int64_t D = m.shape().NumElements() / R;
  for (int64_t r = 0; r < R; ++r) {
    float* row = m.As<float>() + r * D;
    double mean = 0;
    for (int64_t d = 0; d < D; ++d) mean += row[d];
    mean /= D;
    for (int64_t d = 0; d < D; ++d) row[d] -= static_cast<float>(mean);
  }
}

// Centres every column of a [R, C] matrix over R (weights [out, in] writing to the
// residual stream: each output vector, or the unembed over the vocabulary).
void CenterColumns(Buffer& m) {
  const int64_t R = m.shape()[0], C = m.shape()[1];
  float* M = m.As<float>();
  for (int64_t c = 0; c < C; ++c) {
    double mean = 0;
    for (int64_t r = 0; r < R; ++r) mean += M[r * C + c];
    mean /= R;
    for (int64_t r = 0; r < R; ++r) M[r * C + c] -= static_cast<float>(mean);
  }
}

// Each matrix reading a norm's output absorbs that norm (layer_tensors.h roles); the norms
// become identities.
void FoldLayerNorms(const ModelConfig& c, LayerWeights& w) {
  const bool ln = c.norm == NormKind::kLayerNorm;
  for (const LayerTensorSpec& t : LayerTensorSpecs()) {
    if (t.role != ProcessingRole::kReadsNorm1 && t.role != ProcessingRole::kReadsNorm2) continue;
    if ((w.*t.field).empty()) continue;
    const bool first = t.role == ProcessingRole::kReadsNorm1;
    FoldInto(first ? w.ln1_w : w.ln2_w, first ? w.ln1_b : w.ln2_b, ln, ln, w.*t.field,
             w.*t.bias);
  }
  for (const LayerTensorSpec& t : LayerTensorSpecs()) {
    if (t.role == ProcessingRole::kNorm) w.*t.field = Buffer();
  }
}

// b_O += Σ_h b_V[h]·W_O[h] with b_V repeated over the query heads of each KV group.
void FoldValueBiases(const ModelConfig& c, LayerWeights& w) {
  if (w.bv.empty()) return;
  const int64_t D = c.d_model, H = c.n_heads, dh = c.d_head, group = c.n_heads / c.n_kv_heads;
  if (w.bo.empty()) w.bo = Buffer::Host(DType::kF32, {D});
  for (int64_t o = 0; o < D; ++o) {
    double acc = 0;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < dh; ++i) {
        acc += double{w.wo.As<float>()[o * H * dh + h * dh + i]} * w.bv.As<float>()[(h / group) * dh + i];
      }
    }
    w.bo.As<float>()[o] += static_cast<float>(acc);
  }
  w.bv = Buffer();
}

}  // namespace

absl::StatusOr<ProcessingOptions> ParseProcessing(std::string_view name) {
  if (name == "none" || name.empty()) return ProcessingOptions{};
  if (name == "transformer-lens" || name == "transformer_lens") {
    return ProcessingOptions{true, true, true, true};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown --processing '", std::string(name), "' (expected none or transformer-lens)"));
}

void ProcessEmbed(const ModelConfig& c, const ProcessingOptions& o, EmbedWeights& e) {
  if (!o.center_writing_weights || c.norm != NormKind::kLayerNorm) return;
  CenterRows(e.w_e);
  CenterRows(e.w_pos);
}

void ProcessLayer(const ModelConfig& c, const ProcessingOptions& o, LayerWeights& w) {
  if (o.fold_ln) FoldLayerNorms(c, w);
  if (o.center_writing_weights && c.norm == NormKind::kLayerNorm) {
    for (const LayerTensorSpec& t : LayerTensorSpecs()) {
      if (t.role != ProcessingRole::kWritesResidual) continue;
      Buffer& m = w.*t.field;
      if (m.shape().rank == 2) {
        CenterColumns(m);
      } else {
        CenterRows(m);
      }
    }
  }
  if (o.fold_value_biases) FoldValueBiases(c, w);
}

void ProcessHead(const ModelConfig& c, const ProcessingOptions& o, HeadWeights& h) {
  const bool ln = c.norm == NormKind::kLayerNorm;
  // As TransformerLens (4.3's bridge): the final norm stays where the blocks normalise only
  // after their sublayers (OLMo 2), and a final softcap keeps the unembedding uncentred (the
  // shift would no longer leave the softmax unchanged).
  const bool post_norm_only = !c.layers.empty() && !HasPreNorms(c.layers.front().norms);
  if (o.fold_ln && !post_norm_only) {
    FoldInto(h.lnf_w, h.lnf_b, ln, ln, h.w_u, h.b_u);
    h.lnf_w = Buffer(), h.lnf_b = Buffer();
  }
  if (o.center_unembed && c.final_softcap == 0.0f) {
    CenterColumns(h.w_u);
    CenterRows(h.b_u);
  }
}

}  // namespace lensd
