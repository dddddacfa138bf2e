// The forward pass at its hook points: interventions on the hook's tensor, then capture.
#include <cmath>
#include <mutex>
#include <tuple>

#include "engine/runtime/model_internal.h"

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

}  // namespace

bool StepPlan::Intervened(HookId id) const {
  if (!any_interventions) return false;
  for (const PlanSeq& s : plan_seqs) {
    if (s.set != nullptr && s.set->Touches(id)) return true;
  }
  return false;
}

bool StepPlan::Wants(HookId id) const {
  if (hooks == nullptr) return false;
  for (size_t s = 0; s < q_begin.size(); ++s) {
    if (hooks->Wants(static_cast<int>(s), id)) return true;
  }
  return false;
}

void Model::Emit(Step& step, Backend& backend, HookId id, TensorView rows) {
  if (step.plan->hooks == nullptr || step.rank != 0) return;
  const auto& batch = *step.plan->batch;
  for (size_t s = 0; s < batch.size(); ++s) {
    if (!step.plan->hooks->Wants(static_cast<int>(s), id)) continue;
    const int begin = step.plan->q_begin[s];
    Capture(step, backend, static_cast<int>(s), id,
            rows.Rows(begin, begin + static_cast<int64_t>(batch[s].tokens.size())));
  }
}

void Model::Hook(Step& step, Backend& backend, HookId id, TensorView rows) {
  if (step.Intervened(id)) {
    backend.ApplyRowOps(rows, {},
                        InterventionSet::PlanTokenHook(config_, id, step.plan->plan_seqs));
  }
  Emit(step, backend, id, rows);
}

void Model::Capture(Step& step, Backend& backend, int seq, HookId id, TensorView value) {
  Shape shape;
  if (IsAttentionMap(id.point)) {
    std::vector<int64_t> dims = value.shape.ToVector();
    dims.insert(dims.begin(), 1);  // [1, H, n_q, n_k]
    shape = Shape::FromVector(dims);
  } else {
    shape =
        HookShape(config_, id.point, static_cast<int64_t>((*step.plan->batch)[seq].tokens.size()));
  }
  HookSink* sink = step.plan->hooks;
  backend.CaptureAsync(value.Reshaped(shape), [this, sink, seq, id](TensorView host) {
    std::lock_guard<std::mutex> lock(capture_mu_);  // stage threads' devices deliver too
    sink->Capture(seq, id, host);
  });
}

void Model::FlushCaptures() {
  for (auto& shard : shards_) shard->backend->FlushCaptures();
}

TensorView Model::Gathered(Step& step, Backend& backend, TensorView local, int64_t outer,
                           Shape full) {
  if (tp_ == 1) return local;
  TensorView out = step.Scratch(backend, full);
  // Fewer parts than ranks in `full`: key/value heads replicated on `stride` ranks each.
  const int stride = static_cast<int>(tp_ * local.NumElements() / full.NumElements());
  step.shard->comm->AllGather(step.rank, local.Reshaped({outer, local.NumElements() / outer}),
                              out.Reshaped({outer, full.NumElements() / outer}), backend, stride);
  return out;
}

void Model::HookSplit(Step& step, Backend& backend, HookId id, TensorView local) {
  const bool edit = step.Intervened(id);  // the same answers on every rank
  if (!edit && !step.Wants(id)) return;
  // The whole tensor's shape: the TransformerLens one without its batch dimension.
  const Shape tl = HookShape(config_, id.point, step.plan->tokens);
  const Shape full = Shape::FromVector(std::vector<int64_t>(tl.dims + 1, tl.dims + tl.rank));
  TensorView all = Gathered(step, backend, local, step.plan->tokens, full);
  if (edit) {
    backend.ApplyRowOps(all, {}, InterventionSet::PlanTokenHook(config_, id, step.plan->plan_seqs));
    if (tp_ > 1) {
      const int64_t T = step.plan->tokens, w = local.NumElements() / T, W = full.NumElements() / T;
      const int64_t c0 = ShardColumn(step.rank, tp_, W / w, w);
      RowOpPlan back;
      for (int64_t r = 0; r < T; ++r)
        AddShardCopy(back, static_cast<int32_t>(r), r * w, r * W + c0, w);
      backend.ApplyRowOps(local, all, back);
    }
  }
  Emit(step, backend, id, all);
}

TensorView Model::NormWithHooks(Step& step, Shard& shard, TensorView x, const Buffer& w,
                                const Buffer& b, HookPoint scale_point, HookPoint normalized_point,
                                int layer) {
  Backend& be = *shard.backend;
  const HookId scale_id{scale_point, layer}, norm_id{normalized_point, layer};
  const bool edit_scale = step.Intervened(scale_id), edit_norm = step.Intervened(norm_id);
  const bool outputs = edit_scale || edit_norm;
  TensorView y = step.Scratch(be, x.shape);
  TensorView normalized = step.Wants(norm_id) || outputs ? step.Scratch(be, x.shape) : TensorView{};
  TensorView scale =
      step.Wants(scale_id) || outputs ? step.Scratch(be, {x.shape[0]}) : TensorView{};
  be.Norm(config_.norm, x, w.view(), b.view(), static_cast<float>(config_.norm_eps), y, normalized,
          scale);
  if (!scale.empty()) {
    // A changed scale changes the normalized value (x_c / scale) and the output.
    TensorView before = edit_scale ? step.Scratch(be, scale.shape) : TensorView{};
    if (edit_scale) be.Copy(scale, before);
    Hook(step, be, scale_id, scale);
    if (edit_scale) be.Renormalize(normalized, before, scale, w.view(), b.view(), y);
  }
  if (!normalized.empty()) {
    Hook(step, be, norm_id, normalized);
    if (edit_norm) be.Renormalize(normalized, {}, {}, w.view(), b.view(), y);
  }
  return y;
}

void Model::EditMaps(Step& step, Backend& b, HookId id, TensorView maps,
                     const std::vector<int64_t>& offsets) {
  if (tp_ == 1) {
    b.ApplyRowOps(maps, {},
                  InterventionSet::PlanAttentionMaps(config_, id, step.plan->plan_seqs, offsets));
    return;
  }
  // Each sequence's map [H_local, n_q, n_k] gathered into [H, n_q, n_k] at tp × its offset,
  // edited there on every rank, then this rank's heads copied back.
  TensorView full = step.Scratch(b, {maps.NumElements() * tp_});
  std::vector<int64_t> full_offsets(offsets.size(), -1);
  RowOpPlan back;
  for (size_t s = 0; s < offsets.size(); ++s) {
    if (offsets[s] < 0) continue;
    const int64_t n = static_cast<int64_t>(config_.n_heads / tp_) * step.plan->plan_seqs[s].n *
                      (step.plan->plan_seqs[s].start_pos + step.plan->plan_seqs[s].n);
    full_offsets[s] = offsets[s] * tp_;
    step.shard->comm->AllGather(
        step.rank, TensorView{maps.As<float>() + offsets[s], DType::kF32, {1, n}},
        TensorView{full.As<float>() + full_offsets[s], DType::kF32, {1, n * tp_}}, b, 1);
    AddShardCopy(back, static_cast<int32_t>(s), offsets[s], full_offsets[s] + step.rank * n, n);
  }
  b.ApplyRowOps(
      full, {},
      InterventionSet::PlanAttentionMaps(config_, id, step.plan->plan_seqs, full_offsets));
  b.ApplyRowOps(maps, full, back);
}

void Model::RerunEditedAttention(Step& step, Backend& b, TensorView q, KvLayerView kv,
                                 const LayerMaps& maps, int layer, TensorView z) {
  for (int m = 0; m < 2; ++m) {
    const HookId id{m == 0 ? HookPoint::kAttnScores : HookPoint::kPattern, layer};
    if (!step.Intervened(id)) continue;
    EditMaps(step, b, id, maps.buffers[m], maps.offsets[m]);
    std::vector<AttentionSeq> again;  // every sequence with edits runs on from its maps
    for (size_t s = 0; s < maps.seqs.size(); ++s) {
      const PlanSeq& ps = step.plan->plan_seqs[s];
      if (ps.set == nullptr || !ps.set->Touches(id)) continue;
      AttentionSeq a = maps.seqs[s];
      a.input = m == 0 ? AttentionSeq::Input::kScores : AttentionSeq::Input::kPattern;
      if (m == 1) a.scores = {};
      again.push_back(a);
    }
    b.Attention(q, kv, again, config_.layers[layer].attention, z);
  }
}

void Model::EditLogits(Step& step, Backend& b, TensorView logits,
                       const std::vector<int>& first_row) {
  const HookId id{HookPoint::kUnembedOut, -1};
  if (!step.Intervened(id)) return;
  std::vector<PlanSeq> rows = step.plan->plan_seqs;
  for (size_t s = 0; s < rows.size(); ++s) {
    rows[s].q_begin = first_row[s];
    if (!(*step.plan->batch)[s].all_logits) rows[s].start_pos += rows[s].n - 1, rows[s].n = 1;
  }
  b.ApplyRowOps(logits, {}, InterventionSet::PlanTokenHook(config_, id, rows));
}

void Model::EmitAttentionMaps(Step& step, Backend& b, const std::vector<AttentionSeq>& seqs,
                              int layer) {
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (auto [point, local] : {std::pair{HookPoint::kAttnScores, seqs[s].scores},
                                std::pair{HookPoint::kPattern, seqs[s].pattern}}) {
      if (local.empty() || step.plan->hooks == nullptr ||
          !step.plan->hooks->Wants(static_cast<int>(s), {point, layer})) {
        continue;
      }
      Shape full = local.shape;  // [H, n_q, n_k]: heads are split across ranks
      full.dims[0] = config_.n_heads;
      TensorView all = Gathered(step, b, local, 1, full);
      if (step.rank == 0) Capture(step, b, int(s), {point, layer}, all);
    }
  }
}

}  // namespace lensd
