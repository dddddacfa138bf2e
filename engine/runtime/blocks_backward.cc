#include "engine/runtime/blocks_backward.h"

#include <algorithm>
#include <iterator>
#include <numeric>
#include <vector>

#include "engine/runtime/step_hooks.h"

namespace lensd {
namespace {

using P = HookPoint;

GradientOps& Ops(RankContext& g) { return *g.b.gradients(); }

// An objective's gradient at hook `id` (StepPlan::seed) added to `d` [T, ...].
bool Seeded(const RankContext& g, HookId id) {
  return g.plan.seed != nullptr && g.plan.seed->id == id;
}

void AddSeed(RankContext& g, HookId id, TensorView d) {
  if (!Seeded(g, id)) return;
  const int64_t T = g.plan.tokens, w = d.NumElements() / T;
  std::vector<float> rows(static_cast<size_t>(T * w), 0.0f);
  for (size_t s = 0; s < g.plan.seed->rows.size(); ++s) {
    const std::vector<float>& seq = g.plan.seed->rows[s];
    std::copy(seq.begin(), seq.end(), rows.begin() + g.plan.q_begin[s] * w);
  }
  TensorView seed = g.Scratch(d.shape);
  g.b.Upload(rows.data(), seed);
  g.b.Add(d, seed, d);
}

// The hook's attachments (an SAE) walked back, in reverse of the order they ran, on `d` in
// place, reading what they read in the forward (the layer's tape).
void AttachmentsBackward(RankContext& g, const LayerTape& t, HookId id, TensorView d) {
  const std::vector<StepPlan::Attached> attached = g.plan.AttachedAt(id);
  if (attached.empty()) return;
  const int64_t T = g.plan.tokens, w = d.NumElements() / T;
  const TensorView read = t.BeforeAttachments(id.point).Reshaped({T, w});
  for (auto it = attached.rbegin(); it != attached.rend(); ++it) {
    it->attachment->Backward(g, read, d.Reshaped({T, w}), it->seqs);
  }
}

// Hook `id`'s gradient N_grad from `d`, the gradient of the value it passes downstream; then
// `d` becomes the gradient of its value before the interventions there, by their rules
// (`unedited`: that value, read by an SAE clamp's rule). `tape` (null outside the blocks,
// where nothing is attached): the layer's, for the hook's attachments, walked back between
// its capture and its interventions' rules as they ran.
void GradAt(RankContext& g, HookId id, TensorView d, TensorView unedited,
            const LayerTape* tape = nullptr) {
  AddSeed(g, id, d);
  CaptureRows(g, id, d);
  if (tape != nullptr) AttachmentsBackward(g, *tape, id, d);
  if (!g.Intervened(id)) return;
  Ops(g).RowOpsBackward(d, unedited,
                        InterventionSet::PlanTokenHook(g.config, id, g.plan.plan_seqs));
}

void GradAt(RankContext& g, const LayerTape& t, HookId id, TensorView d) {
  GradAt(g, id, d, t.Unedited(id.point), &t);
}

// A branch leaving the residual at hook `id` (attn_out, mlp_out) from the residual's `d`: the
// branch's own gradient, `d` itself unless interventions, attachments or an objective's seed
// there change it.
TensorView BranchGrad(RankContext& g, const LayerTape& t, HookId id, TensorView d) {
  if (!g.Intervened(id) && !Seeded(g, id) && g.plan.AttachedAt(id).empty()) {
    CaptureRows(g, id, d);
    return d;
  }
  TensorView own = g.Scratch(d.shape);
  g.b.Copy(d, own);
  GradAt(g, t, id, own);
  return own;
}

// The gradients of a norm's hooks, from the gradient `dy` [T, D] of its output y =
// normalized · w + b: normalized_grad = dy ⊙ w and, per row, scale_grad =
// −Σ normalized_grad ⊙ normalized / scale (normalized = x_c / scale). Emitted when wanted.
void EmitNormGrads(RankContext& g, TensorView dy, const Buffer& w, TensorView normalized,
                   TensorView scale, HookId scale_id, HookId normalized_id) {
  if (!g.Wants(scale_id) && !g.Wants(normalized_id)) return;
  const int64_t T = dy.shape[0], D = dy.shape[1];
  std::vector<float> d(static_cast<size_t>(T * D)), n(d.size()), s(static_cast<size_t>(T));
  std::vector<float> weight(static_cast<size_t>(D), 1.0f);
  g.b.Download(dy, d.data());
  g.b.Download(normalized, n.data());
  g.b.Download(scale, s.data());
  if (!w.empty()) g.b.Download(w.view(), weight.data());
  std::vector<float> ds(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    double sum = 0;
    for (int64_t i = 0; i < D; ++i) {
      float& dn = d[t * D + i];
      dn *= weight[i];
      sum += static_cast<double>(dn) * n[t * D + i];
    }
    ds[t] = static_cast<float>(-sum / s[t]);
  }
  TensorView dn = g.Scratch({T, D}), dscale = g.Scratch({T, 1});
  g.b.Upload(d.data(), dn);
  g.b.Upload(ds.data(), dscale);
  CaptureRows(g, scale_id, dscale);
  CaptureRows(g, normalized_id, dn);
}

// The gradient of a norm's input from its output's `dy`, with its hooks' gradients.
TensorView NormBackward(RankContext& g, TensorView x, const Buffer& w, TensorView dy,
                        TensorView normalized, TensorView scale, HookId scale_id,
                        HookId normalized_id) {
  EmitNormGrads(g, dy, w, normalized, scale, scale_id, normalized_id);
  TensorView dx = g.Scratch(x.shape);
  Ops(g).NormBackward(g.config.norm, x, w.view(), static_cast<float>(g.config.norm_eps), dy, dx);
  return dx;
}

// ln1 (`which` 1) or ln2 (2) before a sublayer reading residual `x`: the residual's gradient
// from the sublayer input's `d` (`d` itself without pre-norms).
TensorView PreNormBackward(RankContext& g, const LayerInputs& in, const LayerTape& t, TensorView x,
                           TensorView d, int which) {
  if (!HasPreNorms(g.config.layers[in.layer].norms)) return d;
  const int l = in.layer;
  return which == 1 ? NormBackward(g, x, in.w.ln1_w, d, t.Get(P::kLn1Normalized),
                                   t.Get(P::kLn1Scale), {P::kLn1Scale, l}, {P::kLn1Normalized, l})
                    : NormBackward(g, x, in.w.ln2_w, d, t.Get(P::kLn2Normalized),
                                   t.Get(P::kLn2Scale), {P::kLn2Scale, l}, {P::kLn2Normalized, l});
}

// The raw sublayer output's gradient from the post-norm output's `d` (`d` itself without
// post-norms); `raw` is recomputed by the caller's `recompute` only when needed.
template <typename Recompute>
TensorView PostNormBackward(RankContext& g, const LayerInputs& in, const LayerTape& t, TensorView d,
                            int which, Recompute recompute) {
  if (!HasPostNorms(g.config.layers[in.layer].norms)) return d;
  const int l = in.layer;
  const TensorView raw = recompute();
  return which == 1 ? NormBackward(g, raw, in.w.ln1_post_w, d, t.Get(P::kLn1PostNormalized),
                                   t.Get(P::kLn1PostScale), {P::kLn1PostScale, l},
                                   {P::kLn1PostNormalized, l})
                    : NormBackward(g, raw, in.w.ln2_post_w, d, t.Get(P::kLn2PostNormalized),
                                   t.Get(P::kLn2PostScale), {P::kLn2PostScale, l},
                                   {P::kLn2PostNormalized, l});
}

// The router logits' gradient [T, E] from each routed weight's gradient `dw` [T, E] (0 where
// not routed): through the renormalisation over the chosen experts when the layer has it,
// then the softmax. In double, per token.
std::vector<float> RouterGrad(const MoeParams& moe, const Routing& r,
                              const std::vector<double>& dw) {
  const int E = moe.experts;
  const int64_t T = static_cast<int64_t>(dw.size()) / E;
  std::vector<float> out(dw.size());
  std::vector<double> dp(E);
  for (int64_t t = 0; t < T; ++t) {
    const float* p = r.probs.data() + t * E;
    const float* w = r.scattered.data() + t * E;
    const double* d = dw.data() + t * E;
    double kept = 0, dot = 0;  // w_e = p_e / Σ_chosen p: d p_e = (d w_e − Σ d w · w) / Σ p
    for (int i = 0; i < moe.top_k; ++i) {
      const int e = static_cast<int>(r.chosen[t * moe.top_k + i]);
      kept += p[e], dot += d[e] * w[e];
    }
    for (int e = 0; e < E; ++e) {
      dp[e] = w[e] == 0.0f ? 0.0 : moe.normalize ? (d[e] - dot) / kept : d[e];
    }
    double mean = 0;  // softmax: d logit_e = p_e (d p_e − Σ p · d p)
    for (int e = 0; e < E; ++e) mean += p[e] * dp[e];
    for (int e = 0; e < E; ++e) out[t * E + e] = static_cast<float>(p[e] * (dp[e] - mean));
  }
  return out;
}

// ExpertForward's twin: the gradient [n, D] of expert `e`'s input rows from its output's `d_y`,
// through the pass `p` it recomputed.
TensorView ExpertBackward(RankContext& g, const LayerInputs& in, int64_t e, const ExpertPass& p,
                          TensorView d_y) {
  const int64_t n = d_y.shape[0], D = g.config.d_model;
  const int64_t M = g.config.layers[in.layer].moe.d_expert;
  TensorView d_act = g.Scratch({n, M}), d_gate = g.Scratch({n, M}), d_up = g.Scratch({n, M});
  TensorView dx = g.Scratch({n, D}), part = g.Scratch({n, D});
  Ops(g).LinearBackward(d_y, g.b.MatrixRows(in.w.w_out.view(), e * D, D), d_act);
  Ops(g).GatedActivationBackward(g.config.act, p.gate, p.up, d_act, d_gate, d_up);
  Ops(g).LinearBackward(d_gate, g.b.MatrixRows(in.w.w_in.view(), e * M, M), dx);
  Ops(g).LinearBackward(d_up, g.b.MatrixRows(in.w.w_up.view(), e * M, M), part);
  g.b.Add(dx, part, dx);
  return dx;
}

// A mixture's input gradient [T, D] from its output's `d_out` (hook_post's value): each
// expert recomputed on its tokens and walked back with its weight, each weight's gradient
// (its expert's output · d_out) through the router; experts in index order per token.
TensorView MoeBackward(RankContext& g, const LayerInputs& in, const LayerTape& t,
                       TensorView d_post) {
  const MoeParams& moe = g.config.layers[in.layer].moe;
  const int64_t T = g.plan.tokens, D = g.config.d_model, E = moe.experts;
  // Its own copy when rules change it: `d_post` may be the residual's gradient itself.
  const TensorView d_out = BranchGrad(g, t, {P::kMoeOut, in.layer}, d_post);
  const TensorView normed = t.Get(P::kMoeIn);
  const Routing r = RouteRows(g, in, normed);
  std::vector<float> host_out(static_cast<size_t>(T * D)), zeros(static_cast<size_t>(T * D));
  g.b.Download(d_out, host_out.data());
  TensorView d_in = g.Scratch({T, D});
  g.b.Upload(zeros.data(), d_in);
  std::vector<double> dw(static_cast<size_t>(T * E), 0.0);
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int32_t>& rows = r.rows[e];
    const int64_t n = static_cast<int64_t>(rows.size());
    if (n == 0) continue;
    TensorView x = g.Scratch({n, D}), d_rows = g.Scratch({n, D}), d_y = g.Scratch({n, D});
    g.b.Gather(normed, rows.data(), x);
    const ExpertPass p = ExpertForward(g, in, e, x);
    std::vector<float> y(static_cast<size_t>(n * D));
    g.b.Download(p.y, y.data());
    for (int64_t i = 0; i < n; ++i) {  // d weight = d_out · the expert's output, per token
      double dot = 0;
      for (int64_t k = 0; k < D; ++k) dot += double{host_out[rows[i] * D + k]} * y[i * D + k];
      dw[rows[i] * E + e] = dot;
    }
    std::vector<int32_t> own(static_cast<size_t>(n));
    std::iota(own.begin(), own.end(), 0);
    g.b.Gather(d_out, rows.data(), d_rows);
    g.b.Upload(zeros.data(), d_y);
    g.b.AddRowsScaled(d_rows, own.data(), r.weights[e].data(), d_y);  // d y = weight · d_out
    const std::vector<float> ones(static_cast<size_t>(n), 1.0f);
    g.b.AddRowsScaled(ExpertBackward(g, in, e, p, d_y), rows.data(), ones.data(), d_in);
  }
  const std::vector<float> d_logits = RouterGrad(moe, r, dw);
  TensorView d_router = g.Scratch({T, E}), from_router = g.Scratch({T, D});
  g.b.Upload(d_logits.data(), d_router);
  Ops(g).LinearBackward(d_router, in.w.w_router.view(), from_router);
  g.b.Add(d_in, from_router, d_in);
  GradAt(g, t, {P::kMoeIn, in.layer}, d_in);
  return d_in;
}

// The MLP's input gradient [T, D] from its (raw) output's `d_out`.
TensorView MlpBackward(RankContext& g, const LayerInputs& in, const LayerTape& t,
                       TensorView d_out) {
  if (g.config.layers[in.layer].mlp == MlpKind::kMoe) return MoeBackward(g, in, t, d_out);
  const int64_t T = g.plan.tokens, M = g.d_mlp, D = g.config.d_model;
  const int l = in.layer;
  const LayerWeights& w = in.w;
  TensorView d_post = g.Scratch({T, M}), d_pre = g.Scratch({T, M}), d_in = g.Scratch({T, D});
  Ops(g).LinearBackward(d_out, w.w_out.view(), d_post);
  GradAt(g, t, {P::kMlpPost, l}, d_post);
  if (g.config.layers[l].mlp == MlpKind::kGated) {
    TensorView d_lin = g.Scratch({T, M}), d_from_up = g.Scratch({T, D});
    Ops(g).GatedActivationBackward(g.config.act, t.Get(P::kMlpPre), t.Get(P::kMlpPreLinear), d_post,
                                   d_pre, d_lin);
    GradAt(g, t, {P::kMlpPreLinear, l}, d_lin);
    Ops(g).LinearBackward(d_lin, w.w_up.view(), d_from_up);
    GradAt(g, t, {P::kMlpPre, l}, d_pre);
    Ops(g).LinearBackward(d_pre, w.w_in.view(), d_in);
    g.b.Add(d_in, d_from_up, d_in);
  } else {
    Ops(g).ActivationBackward(g.config.act, t.Get(P::kMlpPre), d_post, d_pre);
    GradAt(g, t, {P::kMlpPre, l}, d_pre);
    Ops(g).LinearBackward(d_pre, w.w_in.view(), d_in);
  }
  return d_in;
}

// The gradient of q or k before their RMSNorm (`lin`: the projection, hook_q / hook_k) from
// the normed value's `d` [T, heads, dh].
// RopeForward's gradient, in place on d [T, heads, d_head]: each run rotated back.
void RopeBackward(RankContext& g, const LayerInputs& in, TensorView d) {
  const RopeConfig& rope = g.config.layers[in.layer].rope;
  for (const RopeRun& run : RopeRuns(g, in)) {
    Ops(g).RopeBackward(d.Rows(run.begin, run.end), run.inv_freq, rope.rotary_dim,
                        g.plan.positions.data() + run.begin,
                        static_cast<float>(rope.attention_factor));
  }
}

TensorView QkNormBackward(RankContext& g, const LayerInputs& in, TensorView lin, TensorView d,
                          const Buffer& w) {
  const int64_t T = d.shape[0], heads = d.shape[1], dh = d.shape[2];
  const bool per_head = g.config.layers[in.layer].qk_norm == QkNorm::kPerHead;
  const Shape rows = per_head ? Shape{T * heads, dh} : Shape{T, heads * dh};
  TensorView dx = g.Scratch(d.shape);
  Ops(g).NormBackward(NormKind::kRmsNorm, lin.Reshaped(rows), w.view(),
                      static_cast<float>(g.config.norm_eps), d.Reshaped(rows), dx.Reshaped(rows));
  return dx;
}

// The attention's input gradient [T, D] (of the normed residual) from its (raw) output's
// `d_out`.
TensorView AttentionBackward(RankContext& g, const LayerInputs& in, const LayerTape& t,
                             TensorView d_out) {
  const int64_t T = g.plan.tokens, H = g.n_heads, Hkv = g.n_kv_heads, dh = g.config.d_head;
  const int l = in.layer;
  const LayerWeights& w = in.w;
  const LayerSpec& spec = g.config.layers[l];
  TensorView dz = g.Scratch({T, H, dh});
  Ops(g).LinearBackward(d_out, w.wo.view(), dz.Reshaped({T, H * dh}));
  GradAt(g, t, {P::kZ, l}, dz);
  const bool rotary = !g.config.learned_positions;
  const Shape qs{T, H, dh}, ks{T, Hkv, dh};
  // The queries and keys attention read: after rotary, else after the q/k norm, else as
  // projected.
  TensorView q = (rotary ? t.Get(P::kRotQ) : t.Get(P::kQ)).Reshaped(qs);
  TensorView k = (rotary ? t.Get(P::kRotK) : t.Get(P::kK)).Reshaped(ks);
  // Each sequence's own rows, with its map gradients where they are wanted.
  const HookId scores_id{P::kAttnScores, l}, pattern_id{P::kPattern, l};
  std::vector<SeqRows> seqs;
  for (size_t s = 0; s < g.plan.q_begin.size(); ++s) {
    const int n = static_cast<int>((*g.plan.batch)[s].tokens.size());
    SeqRows rows{g.plan.q_begin[s], n, {}, {}};
    HookSink* sink = g.plan.hooks;
    const bool wanted[2] = {sink != nullptr && sink->Wants(static_cast<int>(s), scores_id),
                            sink != nullptr && sink->Wants(static_cast<int>(s), pattern_id)};
    if (wanted[0]) rows.dscores = g.Scratch({H, n, n});
    if (wanted[1]) rows.dpattern = g.Scratch({H, n, n});
    seqs.push_back(rows);
  }
  TensorView dq = g.Scratch(qs), dk = g.Scratch(ks), dv = g.Scratch(ks);
  Ops(g).AttentionBackward(q, k, t.Get(P::kV).Reshaped(ks), seqs, spec.attention, dz, dq, dk, dv);
  for (size_t s = 0; s < seqs.size() && g.rank == 0; ++s) {
    if (!seqs[s].dscores.empty()) CaptureSeq(g, static_cast<int>(s), scores_id, seqs[s].dscores);
    if (!seqs[s].dpattern.empty()) CaptureSeq(g, static_cast<int>(s), pattern_id, seqs[s].dpattern);
  }
  GradAt(g, t, {P::kV, l}, dv);
  if (rotary) {
    GradAt(g, t, {P::kRotQ, l}, dq);
    GradAt(g, t, {P::kRotK, l}, dk);
    RopeBackward(g, in, dq);
    RopeBackward(g, in, dk);
  }
  if (spec.qk_norm != QkNorm::kNone) {
    dq = QkNormBackward(g, in, t.Get(P::kQ).Reshaped(qs), dq, w.q_norm_w);
    dk = QkNormBackward(g, in, t.Get(P::kK).Reshaped(ks), dk, w.k_norm_w);
  }
  GradAt(g, t, {P::kQ, l}, dq);
  GradAt(g, t, {P::kK, l}, dk);
  const int64_t D = g.config.d_model;
  TensorView d_in = g.Scratch({T, D}), part = g.Scratch({T, D});
  Ops(g).LinearBackward(dq.Reshaped({T, H * dh}), w.wq.view(), d_in);
  Ops(g).LinearBackward(dk.Reshaped({T, Hkv * dh}), w.wk.view(), part);
  g.b.Add(d_in, part, d_in);
  Ops(g).LinearBackward(dv.Reshaped({T, Hkv * dh}), w.wv.view(), part);
  g.b.Add(d_in, part, d_in);
  return d_in;
}

}  // namespace

bool LayerTape::Wants(int seq, HookId id) const {
  // What BlockBackward reads (Get): the projections, the MLP's activations, the middle
  // residual and the norms' statistics.
  static constexpr P kRead[] = {P::kResidPre,
                                P::kQ,
                                P::kK,
                                P::kV,
                                P::kRotQ,
                                P::kRotK,
                                P::kZ,
                                P::kResidMid,
                                P::kMlpPre,
                                P::kMlpPreLinear,
                                P::kMlpPost,
                                P::kLn1Scale,
                                P::kLn1Normalized,
                                P::kLn2Scale,
                                P::kLn2Normalized,
                                P::kLn1PostScale,
                                P::kLn1PostNormalized,
                                P::kLn2PostScale,
                                P::kLn2PostNormalized,
                                P::kMoeIn,
                                P::kMoeOut};
  return id.layer == layer_ && !id.attached() &&
         std::find(std::begin(kRead), std::end(kRead), id.point) != std::end(kRead);
}

void LayerTape::Capture(int seq, HookId id, TensorView value) {
  const int64_t n = static_cast<int64_t>((*plan_.batch)[seq].tokens.size());
  const int64_t width = value.NumElements() / n;
  Buffer& rows = rows_[id.point];
  if (rows.empty()) rows = AllocateInStep(b_, DType::kF32, {plan_.tokens, width});
  const int64_t begin = plan_.q_begin[seq];
  b_.Upload(value.As<float>(), rows.view().Rows(begin, begin + n));
}

TensorView LayerTape::Get(HookPoint point) const {
  auto it = rows_.find(point);
  return it == rows_.end() ? TensorView{} : it->second.view();
}

bool LayerTape::WantsUnedited(HookId id) const { return id.layer == layer_ && !id.attached(); }

void LayerTape::CaptureUnedited(HookId id, TensorView rows) {
  Buffer& kept = unedited_[id.point];
  kept = AllocateInStep(b_, DType::kF32, rows.shape);
  b_.Copy(rows, kept.view());
}

void LayerTape::CaptureBeforeAttachments(HookId id, TensorView rows) {
  Buffer& kept = before_attachments_[id.point];
  kept = AllocateInStep(b_, DType::kF32, rows.shape);
  b_.Copy(rows, kept.view());
}

TensorView LayerTape::BeforeAttachments(HookPoint point) const {
  auto it = before_attachments_.find(point);
  return it == before_attachments_.end() ? TensorView{} : it->second.view();
}

TensorView LayerTape::Unedited(HookPoint point) const {
  auto it = unedited_.find(point);
  return it == unedited_.end() ? TensorView{} : it->second.view();
}

Buffer HeadBackward(RankContext& g, const HeadWeights& h, TensorView x, TensorView logits,
                    TensorView dlogits) {
  const int64_t T = g.plan.tokens, D = g.config.d_model;
  // unembed.hook_out is the projection before the final softcap.
  if (g.config.final_softcap > 0.0f) {
    Ops(g).ScaleAndCapBackward(logits, 1.0f, g.config.final_softcap, dlogits);
  }
  GradAt(g, {P::kUnembedOut, -1}, dlogits, {});  // no SAE clamps on logits (CheckGradients)
  // The final norm recomputed: its statistics, and its output as hook_in held it before edits.
  TensorView y = g.Scratch({T, D}), normalized = g.Scratch({T, D}), scale = g.Scratch({T});
  g.b.Norm(g.config.norm, x, h.lnf_w.view(), h.lnf_b.view(), static_cast<float>(g.config.norm_eps),
           y, normalized, scale);
  TensorView d_normed = g.Scratch({T, D});
  Ops(g).LinearBackward(dlogits, h.w_u.view(), d_normed);
  GradAt(g, {P::kUnembedIn, -1}, d_normed, y);
  TensorView dx = NormBackward(g, x, h.lnf_w, d_normed, normalized, scale.Reshaped({T, 1}),
                               {P::kLnFinalScale, -1}, {P::kLnFinalNormalized, -1});
  Buffer out = AllocateInStep(g.b, DType::kF32, {T, D});
  g.b.Copy(dx, out.view());
  return out;
}

void BlockBackward(RankContext& g, const LayerInputs& in, const LayerTape& t, TensorView dx) {
  const int l = in.layer;
  const LayerSpec& spec = g.config.layers[l];
  const LayerWeights& w = in.w;
  const int64_t T = g.plan.tokens, D = g.config.d_model;
  const TensorView x_pre = t.Get(P::kResidPre);  // after its interventions, as the block read it
  GradAt(g, t, {P::kResidPost, l}, dx);
  // The MLP reads the middle residual, or the block's input with a parallel residual.
  const TensorView mlp_x = spec.parallel_residual ? x_pre : t.Get(P::kResidMid);
  const TensorView d_mlp = BranchGrad(g, t, {P::kMlpOut, l}, dx);
  TensorView d_mlp_raw = PostNormBackward(g, in, t, d_mlp, 2, [&] {
    if (spec.mlp == MlpKind::kMoe) return t.Get(P::kMoeOut);
    TensorView raw = g.Scratch({T, D});
    g.b.Linear(t.Get(P::kMlpPost), w.w_out.view(), w.b_out.view(), raw);
    return raw;
  });
  TensorView d_from_mlp = PreNormBackward(g, in, t, mlp_x, MlpBackward(g, in, t, d_mlp_raw), 2);
  // dx becomes the middle residual's gradient (sequential), the attention branch reads it.
  if (!spec.parallel_residual) {
    g.b.Add(dx, d_from_mlp, dx);
    GradAt(g, t, {P::kResidMid, l}, dx);
  }
  const TensorView d_attn = BranchGrad(g, t, {P::kAttnOut, l}, dx);
  TensorView d_attn_raw = PostNormBackward(g, in, t, d_attn, 1, [&] {
    TensorView raw = g.Scratch({T, D});
    g.b.Linear(t.Get(P::kZ).Reshaped({T, g.n_heads * g.config.d_head}), w.wo.view(), w.bo.view(),
               raw);
    return raw;
  });
  TensorView d_from_attn =
      PreNormBackward(g, in, t, x_pre, AttentionBackward(g, in, t, d_attn_raw), 1);
  // d resid_pre = the residual path + both branches' input gradients.
  if (spec.parallel_residual) g.b.Add(dx, d_from_mlp, dx);
  g.b.Add(dx, d_from_attn, dx);
  GradAt(g, t, {P::kResidPre, l}, dx);
}

void EmbedBackward(RankContext& g, TensorView dx) {
  CaptureRows(g, {P::kEmbed, -1}, dx);
  if (g.config.learned_positions) CaptureRows(g, {P::kPosEmbed, -1}, dx);
}

}  // namespace lensd
