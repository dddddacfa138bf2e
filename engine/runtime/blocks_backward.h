// The backward twins of blocks.h (llm.c's X_backward beside X_forward): activation gradients
// of one rank's step, walked from the head down to the embedding over the backend's
// GradientOps. A layer's activations come from recomputing it (LayerTape); each hook's
// gradient N_grad — with respect to the value N passes downstream — goes to the context's
// sink under N's HookId as the walk reaches it, the last layer's first.
#ifndef LENSD_ENGINE_RUNTIME_BLOCKS_BACKWARD_H_
#define LENSD_ENGINE_RUNTIME_BLOCKS_BACKWARD_H_

#include <map>
#include <vector>

#include "engine/runtime/blocks.h"

namespace lensd {

// One layer's activations for its backward, captured from its recomputation: the hooks
// BlockBackward reads, as [T, width] rows of the whole step, in device memory.
class LayerTape : public HookSink {
 public:
  LayerTape(Backend& b, const StepPlan& plan, int layer) : b_(b), plan_(plan), layer_(layer) {}
  bool Wants(int seq, HookId id) const override;
  void Capture(int seq, HookId id, TensorView value) override;
  // The rows of `point` [T, width]; empty when the layer has no such hook.
  TensorView Get(HookPoint point) const;
  // Hooks with interventions whose gradient rules read the value before them.
  bool WantsUnedited(HookId id) const override;
  void CaptureUnedited(HookId id, TensorView rows) override;
  TensorView Unedited(HookPoint point) const;  // empty when not kept
  // Hooks with attachments: what the attachments read, for their backward.
  bool WantsBeforeAttachments(HookId id) const override { return WantsUnedited(id); }
  void CaptureBeforeAttachments(HookId id, TensorView rows) override;
  TensorView BeforeAttachments(HookPoint point) const;  // empty when not kept

 private:
  Backend& b_;
  const StepPlan& plan_;
  int layer_;
  std::map<HookPoint, Buffer> rows_, unedited_, before_attachments_;
};

// From the gradient of the returned (softcapped) logits `dlogits` [T, V] of every row (`logits`
// the returned logits, needed only with a final softcap; `x` the final residual [T, D]): the
// final residual's gradient [T, D]. `dlogits` is overwritten.
Buffer HeadBackward(RankContext& g, const HeadWeights& h, TensorView x, TensorView logits,
                    TensorView dlogits);

// `dx` [T, D]: the gradient of the block's output residual on entry, of its input residual
// on return. Dense, gated and mixture-of-experts MLPs (the routing's choice is constant; its
// weights are differentiated through the router). Through the interventions at
// the layer's token hooks by their gradient rules (RowOpsBackwardHost).
void BlockBackward(RankContext& g, const LayerInputs& in, const LayerTape& tape, TensorView dx);

// The embedding's hooks from the first block's input gradient `dx`.
void EmbedBackward(RankContext& g, TensorView dx);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_BLOCKS_BACKWARD_H_
