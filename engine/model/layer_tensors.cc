#include "engine/model/layer_tensors.h"

namespace lensd {
namespace {

using W = LayerWeights;
using Init = RandomInit;
using Role = ProcessingRole;
using Split = TpSplit;

constexpr LayerTensorSpec kSpecs[] = {
    {&W::ln1_w, Split::kReplicated, Role::kNorm, nullptr, Init::kNormWeight, 1},
    {&W::ln1_b, Split::kReplicated, Role::kNorm, nullptr, Init::kBias, 3},
    {&W::wq, Split::kQueryRows, Role::kReadsNorm1, &W::bq, Init::kFanIn, 5},
    {&W::bq, Split::kQueryRows, Role::kOther, nullptr, Init::kBias, 12},
    {&W::wk, Split::kKvRows, Role::kReadsNorm1, &W::bk, Init::kFanIn, 6},
    {&W::bk, Split::kKvRows, Role::kOther, nullptr, Init::kBias, 13},
    {&W::wv, Split::kKvRows, Role::kReadsNorm1, &W::bv, Init::kFanIn, 7},
    {&W::bv, Split::kKvRows, Role::kOther, nullptr, Init::kBias, 14},
    {&W::wo, Split::kQueryCols, Role::kWritesResidual, nullptr, Init::kFanIn, 8},
    {&W::bo, Split::kRankZero, Role::kWritesResidual, nullptr, Init::kBias, 15},
    {&W::ln2_w, Split::kReplicated, Role::kNorm, nullptr, Init::kNormWeight, 2},
    {&W::ln2_b, Split::kReplicated, Role::kNorm, nullptr, Init::kBias, 4},
    {&W::w_in, Split::kMlpRows, Role::kReadsNorm2, &W::b_in, Init::kFanIn, 9},
    {&W::b_in, Split::kMlpRows, Role::kOther, nullptr, Init::kBias, 16},
    {&W::w_up, Split::kMlpRows, Role::kReadsNorm2, &W::b_up, Init::kFanIn, 10},
    {&W::b_up, Split::kMlpRows, Role::kOther, nullptr, Init::kBias, 18},
    {&W::w_out, Split::kMlpCols, Role::kWritesResidual, nullptr, Init::kFanIn, 11},
    {&W::b_out, Split::kRankZero, Role::kWritesResidual, nullptr, Init::kBias, 17},
    {&W::ln1_post_w, Split::kReplicated, Role::kPostNorm, nullptr, Init::kNormWeight, 19},
    {&W::ln1_post_b, Split::kReplicated, Role::kPostNorm, nullptr, Init::kBias, 20},
    {&W::ln2_post_w, Split::kReplicated, Role::kPostNorm, nullptr, Init::kNormWeight, 21},
    {&W::ln2_post_b, Split::kReplicated, Role::kPostNorm, nullptr, Init::kBias, 22},
    // Every rank holds all of them: per-head weights are shared by the heads, and a
    // whole-projection norm runs on the gathered projection (blocks.cc).
    {&W::q_norm_w, Split::kReplicated, Role::kPostNorm, nullptr, Init::kNormWeight, 23},
    {&W::k_norm_w, Split::kReplicated, Role::kPostNorm, nullptr, Init::kNormWeight, 24},
    // Every rank routes; the router reads ln2's output like the experts (fold_ln).
    {&W::w_router, Split::kReplicated, Role::kReadsNorm2, nullptr, Init::kFanIn, 25},
};

}  // namespace

std::span<const LayerTensorSpec> LayerTensorSpecs() { return kSpecs; }

bool HasLayerTensor(const ModelConfig& c, int layer, LayerTensor f) {
  const LayerSpec& spec = c.layers[layer];
  const bool layer_norm = c.norm == NormKind::kLayerNorm;
  const bool gated = spec.mlp != MlpKind::kDense;  // experts are gated too
  const bool pre = HasPreNorms(spec.norms), post = HasPostNorms(spec.norms);
  if (f == &W::ln1_w || f == &W::ln2_w) return pre;
  if (f == &W::ln1_b || f == &W::ln2_b) return pre && layer_norm;
  if (f == &W::ln1_post_w || f == &W::ln2_post_w) return post;
  if (f == &W::ln1_post_b || f == &W::ln2_post_b) return post && layer_norm;
  if (f == &W::q_norm_w || f == &W::k_norm_w) return spec.qk_norm != QkNorm::kNone;
  if (f == &W::w_router) return spec.mlp == MlpKind::kMoe;
  if (f == &W::bq || f == &W::bk || f == &W::bv) return c.qkv_bias;
  if (f == &W::bo) return c.o_bias;
  if (f == &W::w_up) return gated;
  if (f == &W::b_up) return gated && c.mlp_bias;
  if (f == &W::b_in || f == &W::b_out) return c.mlp_bias;
  return true;
}

bool IsNormWeight(LayerTensor f) {
  return f == &W::ln1_w || f == &W::ln2_w || f == &W::ln1_post_w || f == &W::ln2_post_w ||
         f == &W::q_norm_w || f == &W::k_norm_w;
}

Shape LayerTensorShape(const ModelConfig& c, int layer, LayerTensor f) {
  const int64_t D = c.d_model, Q = int64_t{c.n_heads} * c.d_head;
  const bool moe = c.layers[layer].mlp == MlpKind::kMoe;
  const int64_t M = moe ? c.layers[layer].moe.d_expert : c.d_mlp;
  const int64_t KV = int64_t{c.n_kv_heads} * c.d_head;
  if (f == &W::q_norm_w || f == &W::k_norm_w) {
    if (c.layers[layer].qk_norm == QkNorm::kPerHead) return {c.d_head};
    return {f == &W::q_norm_w ? Q : KV};
  }
  // Experts' matrices stacked by rows (one "expert" for dense MLPs).
  const int64_t E = moe ? c.layers[layer].moe.experts : 1;
  if (f == &W::w_router) return {E, D};
  if (f == &W::w_in || f == &W::w_up) return {E * M, D};
  if (f == &W::w_out) return {E * D, M};
  if (f == &W::wq) return {Q, D};
  if (f == &W::bq) return {Q};
  if (f == &W::wk || f == &W::wv) return {KV, D};
  if (f == &W::bk || f == &W::bv) return {KV};
  if (f == &W::wo) return {D, Q};
  if (f == &W::b_in || f == &W::b_up) return {M};
  return {D};  // norms, post-norms, bo, b_out
}

}  // namespace lensd
