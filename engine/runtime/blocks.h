// The block math of the forward pass as free functions over one rank's context: embedding, a
// transformer block (norms, attention, MLP) and the head. Each is the forward half of a pair;
// a backward pass adds its twin beside it (llm.c's X_forward / X_backward). They know nothing
// of stages, threads or sinks: hook points go through step_hooks.h, the schedule that calls
// them is forward_schedule.cc.
#ifndef LENSD_ENGINE_RUNTIME_BLOCKS_H_
#define LENSD_ENGINE_RUNTIME_BLOCKS_H_

#include "engine/model/weights.h"
#include "engine/runtime/step_context.h"

namespace lensd {

// What layer `layer`'s math reads on this rank.
struct LayerInputs {
  int layer = 0;
  const LayerWeights& w;
  TensorView inv_freq;  // [rotary_dim / 2] (longrope: [2, rotary_dim / 2], short then long);
                        // empty with learned positions
  KvLayerView kv;       // the layer's K/V pools
};

// The step's rows in runs of one rotary frequency table: every row for most models; for
// longrope, each sequence's short or long table by its length (SeqInput::Context), neighbours
// with the same table merged.
struct RopeRun {
  int64_t begin, end;   // rows
  TensorView inv_freq;  // [rotary_dim / 2]
};
std::vector<RopeRun> RopeRuns(const RankContext& c, const LayerInputs& in);

// Rotates the rotary dims of q or k [T, heads, d_head] in place by each row's position, times
// the rope's attention factor (longrope; 1 otherwise).
void RopeForward(RankContext& c, const LayerInputs& in, TensorView x);

// Token embeddings (plus learned positions) of the step's rows: the new residual [T, D].
Buffer EmbedForward(RankContext& c, const EmbedWeights& e);

// One transformer block on the residual `x` [T, D], in place.
void BlockForward(RankContext& c, const LayerInputs& in, TensorView x);

// LayerNorm / RMSNorm of `x` with weight `w` and bias `b`, with its scale and normalized
// hooks (interventions on either change the output).
TensorView NormForward(RankContext& c, TensorView x, const Buffer& w, const Buffer& b,
                       HookId scale_id, HookId normalized_id);

// Attention of the normalized residual `normed` [T, D]: q/k/v, rotary, K/V written to the
// cache, attention over it, output projection (summed over ranks) [T, D].
TensorView AttentionForward(RankContext& c, const LayerInputs& in, TensorView normed);

// The MLP (dense or gated) of `normed` [T, D], its output summed over ranks [T, D].
TensorView MlpForward(RankContext& c, const LayerInputs& in, TensorView normed);

// Each token's experts and their weights: softmax over the router's logits [T, E] (host),
// the top_k largest (ties: the lower index), renormalised when the layer says so.
struct Routing {
  std::vector<std::vector<int32_t>> rows;   // per expert: its tokens, ascending
  std::vector<std::vector<float>> weights;  // per expert: their weights
  std::vector<float> probs;                 // [T, E]: the softmax
  std::vector<float> scattered;             // [T, E]: each token's weights, 0 where not routed
  std::vector<float> chosen;                // [T, top_k]: its experts, by falling weight
};
// The routing of a mixture layer's input rows `normed` [T, D].
Routing RouteRows(RankContext& c, const LayerInputs& in, TensorView normed);

// One expert's gated MLP over its tokens' rows x [n, D] (`local`: its index on this rank):
// the gate and up projections, the activation and the output, in the context's scratch.
struct ExpertPass {
  TensorView gate, up, act, y;
};
ExpertPass ExpertForward(RankContext& c, const LayerInputs& in, int64_t local, TensorView x);

// A mixture of experts on `normed` [T, D] (MlpKind::kMoe): the router's softmax picks each
// token's top_k experts on the host; each expert runs on its tokens only and adds its
// weighted output to their rows [T, D].
TensorView MoeForward(RankContext& c, const LayerInputs& in, TensorView normed);

// Final norm and unembedding of each sequence's last row (every row with all_logits): the
// logits in host memory, rows in batch order.
ForwardResult HeadForward(RankContext& c, const HeadWeights& h, TensorView x);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_BLOCKS_H_
