#include "engine/runtime/step_hooks.h"

#include <cstring>
#include <mutex>
#include <utility>

namespace lensd {
namespace {

// Appends a copy of `n` elements from `src` (in the source tensor) to `dst` as row `row`: the
// write-back of a rank's part after interventions on a gathered tensor.
void AddShardCopy(RowOpPlan& plan, int32_t row, int64_t dst, int64_t src, int64_t n) {
  RowOp op;
  op.kind = RowOpKind::kCopy;
  op.row = row;
  op.n = static_cast<int32_t>(n);
  op.seg_begin = static_cast<int32_t>(plan.segments.size());
  plan.segments.push_back({dst, op.n, 0});
  op.seg_end = op.src_seg_begin = static_cast<int32_t>(plan.segments.size());
  plan.segments.push_back({src, op.n, 0});
  op.src_seg_end = static_cast<int32_t>(plan.segments.size());
  plan.ops.push_back(op);
}

// First column of rank `rank`'s part of a row split into `parts` equal parts over `tp` ranks
// (parts < tp: key/value heads replicated on tp / parts ranks each).
int64_t ShardColumn(int rank, int tp, int64_t parts, int64_t width) {
  return rank * parts / tp * width;
}

bool SeqWants(const RankContext& c, size_t seq, HookId id) {
  return c.plan.hooks != nullptr && c.plan.hooks->Wants(static_cast<int>(seq), id);
}

void EmitSeq(RankContext& c, size_t s, HookId id, TensorView rows) {
  if (!SeqWants(c, s, id)) return;
  const int begin = c.plan.q_begin[s];
  CaptureSeq(c, static_cast<int>(s), id,
             rows.Rows(begin, begin + static_cast<int64_t>((*c.plan.batch)[s].tokens.size())));
}

// `groups` (the step's attachments at a hook, StepPlan::AttachedAt), each on the full rows
// `all` [T, w].
void RunAttachments(RankContext& c, HookId id, const std::vector<StepPlan::Attached>& groups,
                    TensorView all) {
  const int64_t T = c.plan.tokens;
  HookSink* sink = c.plan.hooks;
  if (!groups.empty() && sink != nullptr && c.rank == 0 && sink->WantsBeforeAttachments(id)) {
    sink->CaptureBeforeAttachments(id, all);
  }
  for (const StepPlan::Attached& g : groups) {
    g.attachment->Run(c, all.Reshaped({T, all.NumElements() / T}), g.seqs);
  }
}

}  // namespace

TensorView Gathered(RankContext& c, TensorView local, int64_t outer, Shape full) {
  if (c.tp == 1) return local;
  TensorView out = c.Scratch(full);
  // Fewer parts than ranks in `full`: key/value heads replicated on `stride` ranks each.
  const int stride = static_cast<int>(c.tp * local.NumElements() / full.NumElements());
  c.comm->AllGather(c.rank, local.Reshaped({outer, local.NumElements() / outer}),
                    out.Reshaped({outer, full.NumElements() / outer}), c.b, stride);
  return out;
}

void KeepOwnPart(RankContext& c, TensorView all, TensorView local) {
  const int64_t T = c.plan.tokens, w = local.NumElements() / T, W = all.NumElements() / T;
  const int64_t c0 = ShardColumn(c.rank, c.tp, W / w, w);
  RowOpPlan back;
  for (int64_t r = 0; r < T; ++r) AddShardCopy(back, static_cast<int32_t>(r), r * w, r * W + c0, w);
  c.b.ApplyRowOps(local, all, back);
}

namespace {

// Interventions at attention map `id` on the maps of the step's sequences, which live in
// `maps` (this rank's heads), sequence s's at element offsets[s] (-1: none).
void EditMaps(RankContext& c, HookId id, TensorView maps, const std::vector<int64_t>& offsets) {
  const std::vector<PlanSeq>& seqs = c.plan.plan_seqs;
  if (c.tp == 1) {
    c.b.ApplyRowOps(maps, {}, InterventionSet::PlanAttentionMaps(c.config, id, seqs, offsets));
    return;
  }
  // Each sequence's map [H_local, n_q, n_k] gathered into [H, n_q, n_k] at tp × its offset,
  // edited there on every rank, then this rank's heads copied back.
  TensorView full = c.Scratch({maps.NumElements() * c.tp});
  std::vector<int64_t> full_offsets(offsets.size(), -1);
  RowOpPlan back;
  for (size_t s = 0; s < offsets.size(); ++s) {
    if (offsets[s] < 0) continue;
    const int64_t n =
        static_cast<int64_t>(c.config.n_heads / c.tp) * seqs[s].n * (seqs[s].start_pos + seqs[s].n);
    full_offsets[s] = offsets[s] * c.tp;
    c.comm->AllGather(c.rank, TensorView{maps.As<float>() + offsets[s], DType::kF32, {1, n}},
                      TensorView{full.As<float>() + full_offsets[s], DType::kF32, {1, n * c.tp}},
                      c.b, 1);
    AddShardCopy(back, static_cast<int32_t>(s), offsets[s], full_offsets[s] + c.rank * n, n);
  }
  c.b.ApplyRowOps(full, {}, InterventionSet::PlanAttentionMaps(c.config, id, seqs, full_offsets));
  c.b.ApplyRowOps(maps, full, back);
}

void EmitAttentionMaps(RankContext& c, const std::vector<AttentionSeq>& seqs, int layer) {
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (auto [point, local] : {std::pair{HookPoint::kAttnScores, seqs[s].scores},
                                std::pair{HookPoint::kPattern, seqs[s].pattern}}) {
      if (local.empty() || !SeqWants(c, s, {point, layer})) continue;
      Shape full = local.shape;  // [H, n_q, n_k]: heads are split across ranks
      full.dims[0] = c.config.n_heads;
      TensorView all = Gathered(c, local, 1, full);
      if (c.rank == 0) CaptureSeq(c, static_cast<int>(s), {point, layer}, all);
    }
  }
}

}  // namespace

void CaptureRows(RankContext& c, HookId id, TensorView rows) {
  if (c.plan.hooks == nullptr || c.rank != 0) return;
  for (size_t s = 0; s < c.plan.batch->size(); ++s) EmitSeq(c, s, id, rows);
}

namespace {

// The interventions at token hook `id` on the step's rows `all` [T, ...] (full width).
void EditRows(RankContext& c, HookId id, TensorView all) {
  HookSink* sink = c.plan.hooks;
  if (sink != nullptr && c.rank == 0 && sink->WantsUnedited(id)) sink->CaptureUnedited(id, all);
  c.b.ApplyRowOps(all, {}, InterventionSet::PlanTokenHook(c.config, id, c.plan.plan_seqs));
}

}  // namespace

void HookRows(RankContext& c, HookId id, TensorView rows) {
  if (c.Intervened(id)) EditRows(c, id, rows);
  RunAttachments(c, id, c.plan.AttachedAt(id), rows);
  CaptureRows(c, id, rows);
}

void EmitAttached(RankContext& c, HookId id, TensorView rows, const std::vector<int>& seqs,
                  const std::vector<int>& first_rows) {
  if (c.plan.hooks == nullptr || c.rank != 0) return;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int s = seqs[i];
    if (!SeqWants(c, static_cast<size_t>(s), id)) continue;
    const int64_t first = first_rows.empty() ? c.plan.q_begin[s] : first_rows[i];
    const int64_t n = static_cast<int64_t>((*c.plan.batch)[s].tokens.size());
    CaptureSeq(c, s, id, rows.Rows(first, first + n));
  }
}

void CaptureSeq(RankContext& c, int seq, HookId id, TensorView value) {
  Shape shape;
  const int64_t n = static_cast<int64_t>((*c.plan.batch)[seq].tokens.size());
  if (id.attached()) {
    shape = {1, n, value.NumElements() / n};
  } else if (IsAttentionMap(id.point)) {
    std::vector<int64_t> dims = value.shape.ToVector();
    dims.insert(dims.begin(), 1);  // [1, H, n_q, n_k]
    shape = Shape::FromVector(dims);
  } else {
    shape = HookShape(c.config, id.point, n);
  }
  HookSink* sink = c.plan.hooks;
  std::mutex* mu = c.capture_mu;
  if (id.attached() || !IsHeadsFirst(id.point)) {
    c.b.CaptureAsync(value.Reshaped(shape), [mu, sink, seq, id](TensorView host) {
      std::lock_guard<std::mutex> lock(*mu);  // stage threads' devices deliver too
      sink->Capture(seq, id, host);
    });
    return;
  }
  // Computed token-major [n, heads, w]; handed over heads-first [1, heads, n, w].
  c.b.CaptureAsync(value, [mu, sink, seq, id, shape](TensorView host) {
    const int64_t heads = shape[1], n = shape[2], w = shape[3];
    Buffer t = Buffer::Host(DType::kF32, shape);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        std::memcpy(t.As<float>() + (h * n + i) * w, host.As<float>() + (i * heads + h) * w,
                    static_cast<size_t>(w) * sizeof(float));
      }
    }
    std::lock_guard<std::mutex> lock(*mu);
    sink->Capture(seq, id, t.view());
  });
}

void CaptureHostRows(RankContext& c, HookId id, const float* rows, int64_t width) {
  if (c.rank != 0) return;
  const auto& batch = *c.plan.batch;
  for (size_t s = 0; s < batch.size(); ++s) {
    if (!SeqWants(c, s, id)) continue;
    const int64_t begin = c.plan.q_begin[s], n = static_cast<int64_t>(batch[s].tokens.size());
    const TensorView view{const_cast<float*>(rows + begin * width), DType::kF32, {n, width}};
    std::lock_guard<std::mutex> lock(*c.capture_mu);  // devices' delivery threads capture too
    c.plan.hooks->Capture(static_cast<int>(s), id, view);
  }
}

void CaptureHeads(RankContext& c, HookId id, TensorView local, int64_t heads) {
  const int64_t T = c.plan.tokens, w = local.shape[2];
  TensorView all = Gathered(c, local.Reshaped({T, local.NumElements() / T}), T, {T, heads * w});
  CaptureRows(c, id, all.Reshaped({T, heads, w}));  // each sequence's rows [n, heads, w]
}

void HookSplitRows(RankContext& c, HookId id, TensorView local) {
  const bool edit = c.Intervened(id);  // the same answers on every rank
  const std::vector<StepPlan::Attached> attached = c.plan.AttachedAt(id);
  if (!edit && attached.empty() && !c.Wants(id)) return;
  // The whole tensor's shape: the TransformerLens one without its batch dimension.
  const int64_t T = c.plan.tokens;
  const Shape tl = HookShape(c.config, id.point, T);
  const Shape full = Shape::FromVector(std::vector<int64_t>(tl.dims + 1, tl.dims + tl.rank));
  TensorView all = Gathered(c, local, T, full);
  if (edit) EditRows(c, id, all);
  RunAttachments(c, id, attached, all);
  if ((edit || !attached.empty()) && c.tp > 1) KeepOwnPart(c, all, local);
  CaptureRows(c, id, all);
}

LayerMaps PrepareMaps(RankContext& c, int layer, int64_t heads) {
  const HookId ids[2] = {{HookPoint::kAttnScores, layer}, {HookPoint::kPattern, layer}};
  LayerMaps maps;
  int64_t sizes[2] = {0, 0};
  for (size_t s = 0; s < c.plan.batch->size(); ++s) {
    const SeqInput& in = (*c.plan.batch)[s];
    const int n_q = static_cast<int>(in.tokens.size());
    maps.seqs.push_back({c.plan.q_begin[s], n_q, in.start_pos, in.block_table->data(), {}, {}});
    const int64_t n = heads * n_q * (in.start_pos + n_q);
    for (int m = 0; m < 2; ++m) {
      const bool edited = in.interventions != nullptr && in.interventions->Touches(ids[m]);
      const bool used = edited || SeqWants(c, s, ids[m]);
      maps.offsets[m].push_back(used ? sizes[m] : -1);
      if (used) sizes[m] += n;
    }
  }
  // One buffer per map kind: interventions plan over all sequences' maps at once.
  for (int m = 0; m < 2; ++m) {
    if (sizes[m] == 0) continue;
    maps.buffers[m] = c.Scratch({sizes[m]});
    for (size_t s = 0; s < maps.seqs.size(); ++s) {
      if (maps.offsets[m][s] < 0) continue;
      AttentionSeq& a = maps.seqs[s];
      TensorView& view = m == 0 ? a.scores : a.pattern;
      view = {maps.buffers[m].As<float>() + maps.offsets[m][s],
              DType::kF32,
              {heads, a.n_q, a.start_pos + a.n_q}};
    }
  }
  return maps;
}

void FinishMaps(RankContext& c, TensorView q, KvLayerView kv, const LayerMaps& maps, int layer,
                TensorView z) {
  for (int m = 0; m < 2; ++m) {
    const HookId id{m == 0 ? HookPoint::kAttnScores : HookPoint::kPattern, layer};
    if (!c.Intervened(id)) continue;
    EditMaps(c, id, maps.buffers[m], maps.offsets[m]);
    std::vector<AttentionSeq> again;  // every sequence with edits runs on from its maps
    for (size_t s = 0; s < maps.seqs.size(); ++s) {
      const PlanSeq& ps = c.plan.plan_seqs[s];
      if (ps.set == nullptr || !ps.set->Touches(id)) continue;
      AttentionSeq a = maps.seqs[s];
      a.input = m == 0 ? AttentionSeq::Input::kScores : AttentionSeq::Input::kPattern;
      if (m == 1) a.scores = {};
      again.push_back(a);
    }
    c.b.Attention(q, kv, again, c.config.layers[layer].attention, z);
  }
  EmitAttentionMaps(c, maps.seqs, layer);
}

void HookLogits(RankContext& c, TensorView logits, const std::vector<int>& first_row) {
  const HookId id{HookPoint::kUnembedOut, -1};
  const auto& batch = *c.plan.batch;
  if (c.Intervened(id)) {
    std::vector<PlanSeq> rows = c.plan.plan_seqs;
    for (size_t s = 0; s < rows.size(); ++s) {
      rows[s].q_begin = first_row[s];
      if (!batch[s].all_logits) rows[s].start_pos += rows[s].n - 1, rows[s].n = 1;
    }
    c.b.ApplyRowOps(logits, {}, InterventionSet::PlanTokenHook(c.config, id, rows));
  }
  for (size_t s = 0; s < batch.size(); ++s) {
    if (!batch[s].all_logits || !SeqWants(c, s, id)) continue;
    const int64_t first = first_row[s];
    CaptureSeq(c, static_cast<int>(s), id,
               logits.Rows(first, first + static_cast<int64_t>(batch[s].tokens.size())));
  }
}

}  // namespace lensd
