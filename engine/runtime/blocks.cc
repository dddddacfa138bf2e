#include "engine/runtime/blocks.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/runtime/step_hooks.h"
#include "engine/runtime/tensor_parallel.h"

namespace lensd {
namespace {

// ln1 (`which` 1) or ln2 (2) of the layer on the residual `x`, with its hooks; `x` itself when
// the layer has no pre-norms (LayerSpec::norms).
TensorView PreNorm(RankContext& c, const LayerInputs& in, TensorView x, int which) {
  if (!HasPreNorms(c.config.layers[in.layer].norms)) return x;  // the sublayer reads x
  const LayerWeights& w = in.w;
  const int l = in.layer;
  return which == 1 ? NormForward(c, x, w.ln1_w, w.ln1_b, {HookPoint::kLn1Scale, l},
                                  {HookPoint::kLn1Normalized, l})
                    : NormForward(c, x, w.ln2_w, w.ln2_b, {HookPoint::kLn2Scale, l},
                                  {HookPoint::kLn2Normalized, l});
}

// ln1_post / ln2_post on a sublayer's output when the layer has post-norms, else `out`.
TensorView PostNorm(RankContext& c, const LayerInputs& in, TensorView out, int which) {
  if (!HasPostNorms(c.config.layers[in.layer].norms)) return out;
  const LayerWeights& w = in.w;
  const int l = in.layer;
  return which == 1 ? NormForward(c, out, w.ln1_post_w, w.ln1_post_b, {HookPoint::kLn1PostScale, l},
                                  {HookPoint::kLn1PostNormalized, l})
                    : NormForward(c, out, w.ln2_post_w, w.ln2_post_b, {HookPoint::kLn2PostScale, l},
                                  {HookPoint::kLn2PostNormalized, l});
}

// A sublayer's output projection, summed over the tensor-parallel ranks.
void ReduceOverRanks(RankContext& c, TensorView out) {
  if (c.tp > 1) c.comm->AllReduceSum(c.rank, out, c.b);
}

// The q or k norm's hooks: scale, normalized (before the weight) and the normed output.
struct QkNormHooks {
  HookPoint scale, normalized, normed;
};

// RMSNorm of queries or keys `x` [T, heads, dh] (this rank's heads) per head or over the
// whole projection of `all_heads` heads, with its (capture-only) hooks: a new tensor of the
// same shape. Under tensor parallelism a whole-projection norm runs on the gathered
// projection (every rank), and each rank keeps its part.
TensorView QkNormForward(RankContext& c, const LayerInputs& in, TensorView x, const Buffer& w,
                         int64_t all_heads, QkNormHooks points) {
  const float eps = static_cast<float>(c.config.norm_eps);
  const HookId scale_id{points.scale, in.layer}, normalized_id{points.normalized, in.layer};
  const HookId normed_id{points.normed, in.layer};
  const bool per_head = c.config.layers[in.layer].qk_norm == QkNorm::kPerHead;
  const int64_t T = x.shape[0], heads = x.shape[1], dh = x.shape[2];
  // Per head: rows of dh over this rank's heads; whole: rows of the gathered projection.
  const Shape rows = per_head ? Shape{T * heads, dh} : Shape{T, all_heads * dh};
  TensorView input = per_head ? x.Reshaped(rows) : Gathered(c, x, T, rows).Reshaped(rows);
  TensorView y = c.Scratch(x.shape);
  TensorView out = per_head || c.tp == 1 ? y.Reshaped(rows) : c.Scratch(rows);
  TensorView normalized = c.Wants(normalized_id) ? c.Scratch(rows) : TensorView{};
  TensorView scale = c.Wants(scale_id) ? c.Scratch({rows[0]}) : TensorView{};
  c.b.Norm(NormKind::kRmsNorm, input, w.view(), {}, eps, out, normalized, scale);
  if (per_head) {  // captured heads-first, gathered across ranks
    if (!scale.empty()) CaptureHeads(c, scale_id, scale.Reshaped({T, heads, 1}), all_heads);
    if (!normalized.empty()) {
      CaptureHeads(c, normalized_id, normalized.Reshaped({T, heads, dh}), all_heads);
    }
    if (c.Wants(normed_id)) CaptureHeads(c, normed_id, y, all_heads);
    return y;
  }
  if (!scale.empty()) HookRows(c, scale_id, scale);
  if (!normalized.empty()) HookRows(c, normalized_id, normalized);
  HookRows(c, normed_id, out);
  if (c.tp > 1) KeepOwnPart(c, out, y);
  return y;
}

}  // namespace

namespace {

Routing Route(const MoeParams& moe, const std::vector<float>& logits, int64_t tokens) {
  const int E = moe.experts;
  Routing r;
  r.rows.resize(E), r.weights.resize(E);
  r.scattered.assign(static_cast<size_t>(tokens * E), 0.0f);
  r.chosen.resize(static_cast<size_t>(tokens * moe.top_k));
  r.probs.resize(static_cast<size_t>(tokens * E));
  std::vector<int> order(E);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits.data() + t * E;
    float* probs = r.probs.data() + t * E;
    const float top = *std::max_element(l, l + E);
    float sum = 0.0f;
    for (int e = 0; e < E; ++e) sum += probs[e] = std::exp(l[e] - top);
    for (int e = 0; e < E; ++e) probs[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + moe.top_k, order.end(), [&](int a, int b) {
      return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
    });
    float kept = 0.0f;
    for (int i = 0; i < moe.top_k; ++i) kept += probs[order[i]];
    for (int i = 0; i < moe.top_k; ++i) {
      const int e = order[i];
      const float weight = moe.normalize ? probs[e] / kept : probs[e];
      r.rows[e].push_back(static_cast<int32_t>(t));
      r.weights[e].push_back(weight);
      r.scattered[t * E + e] = weight;
      r.chosen[t * moe.top_k + i] = static_cast<float>(e);
    }
  }
  return r;
}

}  // namespace

Routing RouteRows(RankContext& c, const LayerInputs& in, TensorView normed) {
  const MoeParams& moe = c.config.layers[in.layer].moe;
  const int64_t T = c.plan.tokens;
  TensorView logits = c.Scratch({T, moe.experts});
  c.b.Linear(normed, in.w.w_router.view(), {}, logits);
  std::vector<float> host(static_cast<size_t>(T * moe.experts));
  c.b.Download(logits, host.data());  // routing is decided on the host, per step
  return Route(moe, host, T);
}

ExpertPass ExpertForward(RankContext& c, const LayerInputs& in, int64_t local, TensorView x) {
  const int64_t n = x.shape[0], D = c.config.d_model;
  const int64_t M = c.config.layers[in.layer].moe.d_expert;
  ExpertPass p{c.Scratch({n, M}), c.Scratch({n, M}), c.Scratch({n, M}), c.Scratch({n, D})};
  c.b.Linear(x, c.b.MatrixRows(in.w.w_in.view(), local * M, M), {}, p.gate);
  c.b.Linear(x, c.b.MatrixRows(in.w.w_up.view(), local * M, M), {}, p.up);
  c.b.GatedActivation(c.config.act, p.gate, p.up, p.act);
  c.b.Linear(p.act, c.b.MatrixRows(in.w.w_out.view(), local * D, D), {}, p.y);
  return p;
}

TensorView MoeForward(RankContext& c, const LayerInputs& in, TensorView normed) {
  const MoeParams& moe = c.config.layers[in.layer].moe;
  // Under tensor parallelism each rank holds whole experts [e0, e1), stacked from its row 0.
  const auto [e0, e1] = ExpertsOfRank(moe, c.rank, c.tp);
  const int64_t T = c.plan.tokens, D = c.config.d_model;
  HookRows(c, {HookPoint::kMoeIn, in.layer}, normed);
  const Routing r = RouteRows(c, in, normed);
  CaptureHostRows(c, {HookPoint::kExpertWeights, in.layer}, r.scattered.data(), moe.experts);
  CaptureHostRows(c, {HookPoint::kExpertIndices, in.layer}, r.chosen.data(), moe.top_k);
  TensorView out = c.Scratch({T, D});
  // Experts in index order, each over its tokens only: a token's sum runs over its experts
  // in that order whatever else is in the batch.
  for (int e = e0; e < e1; ++e) {
    const int64_t n = static_cast<int64_t>(r.rows[e].size()), local = e - e0;
    if (n == 0) continue;
    TensorView x = c.Scratch({n, D});
    c.b.Gather(normed, r.rows[e].data(), x);
    c.b.AddRowsScaled(ExpertForward(c, in, local, x).y, r.rows[e].data(), r.weights[e].data(), out);
  }
  ReduceOverRanks(c, out);
  HookRows(c, {HookPoint::kMoeOut, in.layer}, out);
  return out;
}

std::vector<RopeRun> RopeRuns(const RankContext& c, const LayerInputs& in) {
  const RopeConfig& rope = c.config.layers[in.layer].rope;
  if (rope.type != RopeType::kLongRope) return {{0, c.plan.tokens, in.inv_freq}};
  const int64_t half = rope.rotary_dim / 2;
  std::vector<RopeRun> runs;
  int previous = -1;
  for (size_t s = 0; s < c.plan.batch->size(); ++s) {
    const SeqInput& seq = (*c.plan.batch)[s];
    const int table = seq.Context() > rope.original_max_position ? 1 : 0;
    const int64_t begin = c.plan.q_begin[s], end = begin + static_cast<int64_t>(seq.tokens.size());
    if (table == previous) {
      runs.back().end = end;
    } else {
      runs.push_back({begin, end, in.inv_freq.Rows(table, table + 1).Reshaped({half})});
    }
    previous = table;
  }
  return runs;
}

void RopeForward(RankContext& c, const LayerInputs& in, TensorView x) {
  const RopeConfig& rope = c.config.layers[in.layer].rope;
  for (const RopeRun& run : RopeRuns(c, in)) {
    c.b.Rope(x.Rows(run.begin, run.end), run.inv_freq, rope.rotary_dim,
             c.plan.positions.data() + run.begin, static_cast<float>(rope.attention_factor));
  }
}

Buffer EmbedForward(RankContext& c, const EmbedWeights& e) {
  const int64_t T = c.plan.tokens, D = c.config.d_model;
  Buffer x = AllocateInStep(c.b, DType::kF32, {T, D});
  c.b.Gather(e.w_e.view(), c.plan.ids.data(), x.view());
  if (c.config.embed_scale != 1.0f) c.b.ScaleAndCap(x.view(), c.config.embed_scale, 0.0f);
  HookRows(c, {HookPoint::kEmbed, -1}, x.view());
  if (!e.w_pos.empty()) {
    TensorView pe = c.Scratch({T, D});
    c.b.Gather(e.w_pos.view(), c.plan.positions.data(), pe);
    HookRows(c, {HookPoint::kPosEmbed, -1}, pe);
    c.b.Add(x.view(), pe, x.view());
  }
  return x;
}

void BlockForward(RankContext& c, const LayerInputs& in, TensorView x) {
  const int l = in.layer;
  HookRows(c, {HookPoint::kResidPre, l}, x);
  TensorView attn_out = PostNorm(c, in, AttentionForward(c, in, PreNorm(c, in, x, 1)), 1);
  HookRows(c, {HookPoint::kAttnOut, l}, attn_out);
  TensorView mlp_out;
  if (c.config.layers[l].parallel_residual) {
    mlp_out = MlpForward(c, in, PreNorm(c, in, x, 2));
    c.b.Add(x, attn_out, x);
  } else {
    c.b.Add(x, attn_out, x);
    HookRows(c, {HookPoint::kResidMid, l}, x);
    mlp_out = MlpForward(c, in, PreNorm(c, in, x, 2));
  }
  mlp_out = PostNorm(c, in, mlp_out, 2);
  HookRows(c, {HookPoint::kMlpOut, l}, mlp_out);
  c.b.Add(x, mlp_out, x);
  HookRows(c, {HookPoint::kResidPost, l}, x);
}

TensorView NormForward(RankContext& c, TensorView x, const Buffer& w, const Buffer& b,
                       HookId scale_id, HookId normalized_id) {
  const bool edit_scale = c.Intervened(scale_id), edit_norm = c.Intervened(normalized_id);
  const bool outputs = edit_scale || edit_norm;
  TensorView y = c.Scratch(x.shape);
  TensorView normalized = c.Wants(normalized_id) || outputs ? c.Scratch(x.shape) : TensorView{};
  TensorView scale = c.Wants(scale_id) || outputs ? c.Scratch({x.shape[0]}) : TensorView{};
  c.b.Norm(c.config.norm, x, w.view(), b.view(), static_cast<float>(c.config.norm_eps), y,
           normalized, scale);
  if (!scale.empty()) {
    // A changed scale changes the normalized value (x_c / scale) and the output.
    TensorView before = edit_scale ? c.Scratch(scale.shape) : TensorView{};
    if (edit_scale) c.b.Copy(scale, before);
    HookRows(c, scale_id, scale);
    if (edit_scale) c.b.Renormalize(normalized, before, scale, w.view(), b.view(), y);
  }
  if (!normalized.empty()) {
    HookRows(c, normalized_id, normalized);
    if (edit_norm) c.b.Renormalize(normalized, {}, {}, w.view(), b.view(), y);
  }
  return y;
}

TensorView AttentionForward(RankContext& c, const LayerInputs& in, TensorView normed) {
  const int64_t T = c.plan.tokens, H = c.n_heads, Hkv = c.n_kv_heads, dh = c.config.d_head;
  const LayerWeights& w = in.w;
  const int l = in.layer;
  TensorView q = c.Scratch({T, H, dh}), k = c.Scratch({T, Hkv, dh}), v = c.Scratch({T, Hkv, dh});
  c.b.Linear(normed, w.wq.view(), w.bq.view(), q.Reshaped({T, H * dh}));
  c.b.Linear(normed, w.wk.view(), w.bk.view(), k.Reshaped({T, Hkv * dh}));
  c.b.Linear(normed, w.wv.view(), w.bv.view(), v.Reshaped({T, Hkv * dh}));
  HookSplitRows(c, {HookPoint::kQ, l}, q);
  HookSplitRows(c, {HookPoint::kK, l}, k);
  HookSplitRows(c, {HookPoint::kV, l}, v);
  const LayerSpec& spec = c.config.layers[l];
  using P = HookPoint;
  if (spec.qk_norm == QkNorm::kPerHead) {
    q = QkNormForward(c, in, q, w.q_norm_w, c.config.n_heads,
                      {P::kQNormScale, P::kQNormNormalized, P::kQNormed});
    k = QkNormForward(c, in, k, w.k_norm_w, c.config.n_kv_heads,
                      {P::kKNormScale, P::kKNormNormalized, P::kKNormed});
  } else if (spec.qk_norm == QkNorm::kWhole) {
    q = QkNormForward(c, in, q, w.q_norm_w, c.config.n_heads,
                      {P::kQNormScaleWhole, P::kQNormNormalizedWhole, P::kQNormedWhole});
    k = QkNormForward(c, in, k, w.k_norm_w, c.config.n_kv_heads,
                      {P::kKNormScaleWhole, P::kKNormNormalizedWhole, P::kKNormedWhole});
  }
  if (!c.config.learned_positions) {
    RopeForward(c, in, q);
    RopeForward(c, in, k);
    HookSplitRows(c, {HookPoint::kRotQ, l}, q);
    HookSplitRows(c, {HookPoint::kRotK, l}, k);
  }
  c.b.WriteKv(k, v, c.plan.slots.data(), in.kv);
  LayerMaps maps = PrepareMaps(c, l, H);
  TensorView z = c.Scratch({T, H, dh});
  c.b.Attention(q, in.kv, maps.seqs, spec.attention, z);
  FinishMaps(c, q, in.kv, maps, l, z);
  HookSplitRows(c, {HookPoint::kZ, l}, z);
  TensorView out = c.Scratch({T, c.config.d_model});
  c.b.Linear(z.Reshaped({T, H * dh}), w.wo.view(), w.bo.view(), out);
  ReduceOverRanks(c, out);
  return out;
}

TensorView MlpForward(RankContext& c, const LayerInputs& in, TensorView normed) {
  if (c.config.layers[in.layer].mlp == MlpKind::kMoe) return MoeForward(c, in, normed);
  const int64_t T = c.plan.tokens, M = c.d_mlp;
  const LayerWeights& w = in.w;
  const int l = in.layer;
  TensorView pre = c.Scratch({T, M}), post = c.Scratch({T, M});
  c.b.Linear(normed, w.w_in.view(), w.b_in.view(), pre);
  HookSplitRows(c, {HookPoint::kMlpPre, l}, pre);
  if (c.config.layers[l].mlp == MlpKind::kGated) {
    TensorView lin = c.Scratch({T, M});
    c.b.Linear(normed, w.w_up.view(), w.b_up.view(), lin);
    HookSplitRows(c, {HookPoint::kMlpPreLinear, l}, lin);
    c.b.GatedActivation(c.config.act, pre, lin, post);
  } else {
    c.b.Activation(c.config.act, pre, post);
  }
  HookSplitRows(c, {HookPoint::kMlpPost, l}, post);
  TensorView out = c.Scratch({T, c.config.d_model});
  c.b.Linear(post, w.w_out.view(), w.b_out.view(), out);
  ReduceOverRanks(c, out);
  return out;
}

ForwardResult HeadForward(RankContext& c, const HeadWeights& h, TensorView x) {
  TensorView y = NormForward(c, x, h.lnf_w, h.lnf_b, {HookPoint::kLnFinalScale, -1},
                             {HookPoint::kLnFinalNormalized, -1});
  HookRows(c, {HookPoint::kUnembedIn, -1}, y);
  ForwardResult result;
  std::vector<int32_t> rows;
  for (size_t s = 0; s < c.plan.batch->size(); ++s) {
    const SeqInput& in = (*c.plan.batch)[s];
    const int n = static_cast<int>(in.tokens.size());
    result.first_row.push_back(static_cast<int>(rows.size()));
    for (int i = in.all_logits ? 0 : n - 1; i < n; ++i) rows.push_back(c.plan.q_begin[s] + i);
  }
  const int64_t R = static_cast<int64_t>(rows.size()), V = c.config.vocab_size;
  TensorView selected = c.Scratch({R, c.config.d_model});
  c.b.Gather(y, rows.data(), selected);
  TensorView logits = c.Scratch({R, V});
  c.b.Linear(selected, h.w_u.view(), h.b_u.view(), logits);
  HookLogits(c, logits, result.first_row);
  // unembed.hook_out is the projection; the returned logits are softcapped (as TransformerLens).
  if (c.config.final_softcap > 0.0f) c.b.ScaleAndCap(logits, 1.0f, c.config.final_softcap);
  result.logits = Buffer::Host(DType::kF32, {R, V});
  c.b.Download(logits, result.logits.As<float>());
  return result;
}

}  // namespace lensd
