// The forward pass at its hook points, on one rank: interventions on the hook's tensor, then
// capture into the step's sink. The block math (blocks.h) calls these; nothing here knows
// which layer math produced the tensor.
#ifndef LENSD_ENGINE_RUNTIME_STEP_HOOKS_H_
#define LENSD_ENGINE_RUNTIME_STEP_HOOKS_H_

#include <cstdint>
#include <vector>

#include "engine/runtime/step_context.h"

namespace lensd {

// The hook chain at `id` on the step's token-major `rows` (the same on every rank):
// interventions, then attachments (attachments.h), then capture of each sequence that wants
// it (rank 0).
void HookRows(RankContext& c, HookId id, TensorView rows);

// A hook whose tensor is split across tensor-parallel ranks (heads, d_mlp): gathered along the
// split dimension when captured, intervened or attached (every rank calls it); the chain runs
// on the full tensor on every rank, which keeps its own part; rank 0 captures.
void HookSplitRows(RankContext& c, HookId id, TensorView local);

// Capture only: each sequence that wants `id` gets its rows of the token-major `rows` (rank 0).
void CaptureRows(RankContext& c, HookId id, TensorView rows);

// For an attachment: captures attached hook `id` (id.attached()) from its token-major `rows`
// [T, w] for each of `seqs` that wants it, as [1, n, w] (rank 0). `first_rows`: where each of
// `seqs` starts in `rows` (empty: the step's rows, StepPlan::q_begin).
void EmitAttached(RankContext& c, HookId id, TensorView rows, const std::vector<int>& seqs,
                  const std::vector<int>& first_rows = {});

// `local` [outer, ...] of every rank concatenated per outer row into `full` (one rank:
// `local` itself); replicated key/value heads are taken once.
TensorView Gathered(RankContext& c, TensorView local, int64_t outer, Shape full);

// This rank's columns of the gathered token-major `all` [T, W] copied into `local` [T, w]: the
// inverse of Gathered.
void KeepOwnPart(RankContext& c, TensorView all, TensorView local);

// A capture-only hook over heads, `local` [T, heads_here, w] of this rank: gathered to all
// `heads` and captured by rank 0 for each sequence that wants it, heads first ([1, heads, n, w],
// IsHeadsFirst).
void CaptureHeads(RankContext& c, HookId id, TensorView local, int64_t heads);

// A capture-only hook computed on the host, `rows` [T, width] (rank 0 captures): each sequence
// that wants it gets its rows.
void CaptureHostRows(RankContext& c, HookId id, const float* rows, int64_t width);

// Hands sequence `seq`'s `value` (device memory of c.b) to the sink with its TransformerLens
// shape, asynchronously; the backend's FlushCaptures waits for the deliveries.
void CaptureSeq(RankContext& c, int seq, HookId id, TensorView value);

// A layer's attention calls, with the score and pattern maps (this rank's heads) of each
// sequence that captures or intervenes on them: all in one buffer per kind (scores,
// pattern), sequence s's at offsets[kind][s] (-1: none).
struct LayerMaps {
  std::vector<AttentionSeq> seqs;
  TensorView buffers[2];
  std::vector<int64_t> offsets[2];
};
LayerMaps PrepareMaps(RankContext& c, int layer, int64_t heads);

// Interventions on the layer's scores, then attention again from the edited scores; the same
// for the pattern (the unfused attention path, for the sequences with such edits). Then the
// captured maps of each sequence (gathered across ranks).
void FinishMaps(RankContext& c, TensorView q, KvLayerView kv, const LayerMaps& maps, int layer,
                TensorView z);

// Interventions at unembed.hook_out on the computed logits rows (every row of sequences with
// all_logits, else only the last), sequence s's from first_row[s]; then their capture.
void HookLogits(RankContext& c, TensorView logits, const std::vector<int>& first_row);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_STEP_HOOKS_H_
