// The backward twins of the Backend's forward ops, for activation gradients (never weight
// gradients): each takes the gradient of an op's output and gives the gradient of its input,
// recomputing from the forward's inputs what it needs. A backend that has them returns them
// from Backend::gradients() (null: this backend computes no gradients). The discipline is the
// forward's: every sum in a fixed order that does not depend on the batch or the thread
// count, so a prompt's gradients are the same bits alone or batched.
#ifndef LENSD_ENGINE_BACKEND_GRADIENT_OPS_H_
#define LENSD_ENGINE_BACKEND_GRADIENT_OPS_H_

#include <cstdint>
#include <vector>

#include "engine/backend/row_ops.h"
#include "engine/core/tensor.h"
#include "engine/model/architecture.h"
#include "engine/model/config.h"

namespace lensd {

// One whole sequence of a backward step: rows [begin, begin + n) hold its positions 0..n-1
// (the backward runs over whole prompts, never from a cached prefix).
struct SeqRows {
  int begin = 0;
  int n = 0;
  // AttentionBackward's optional outputs [H, n, n]: the gradients of the (softcapped) scores
  // and of the pattern, masked entries 0.
  TensorView dscores, dpattern;
};

class GradientOps {
 public:
  virtual ~GradientOps() = default;

  // Linear: y = x·wᵀ (+ bias); dx[T,K] = dy[T,N] · w[N,K], w as AllocateMatrix holds it.
  virtual void LinearBackward(TensorView dy, TensorView w, TensorView dx) = 0;
  // Norm: y = normalized · w (+ b) per row of x[T,D] (w optional); dx from dy.
  virtual void NormBackward(NormKind kind, TensorView x, TensorView w, float eps, TensorView dy,
                            TensorView dx) = 0;
  // Rope: the forward rotates each (i, i + rotary_dim/2) pair by position · inv_freq[i] and
  // scales it; the gradient rotates back and scales, in place on dx[T, heads, dh].
  virtual void RopeBackward(TensorView dx, TensorView inv_freq, int rotary_dim,
                            const int32_t* positions, float scale) = 0;
  // y = act(x): dx = dy · act'(x).
  virtual void ActivationBackward(ActKind kind, TensorView x, TensorView dy, TensorView dx) = 0;
  // y = act(gate) · up: dgate = dy · up · act'(gate), dup = dy · act(gate).
  virtual void GatedActivationBackward(ActKind kind, TensorView gate, TensorView up, TensorView dy,
                                       TensorView dgate, TensorView dup) = 0;
  // y = cap · tanh(scale · x / cap) (cap 0: y = scale · x), from its output y: dy := dx in
  // place.
  virtual void ScaleAndCapBackward(TensorView y, float scale, float cap, TensorView dy) = 0;
  // Causal attention of whole sequences over their own rows: q[T,H,dh] (after rotary),
  // k, v [T,Hkv,dh]; z = softmax(mask(cap(scale · q·k))) · v as Backend::Attention computes
  // it. From dz [T,H,dh]: dq, and dk, dv [T,Hkv,dh] summed over each key/value head's group
  // of query heads. A query with no admissible key has pattern 0 and gradient 0.
  virtual void AttentionBackward(TensorView q, TensorView k, TensorView v,
                                 const std::vector<SeqRows>& seqs, const AttentionParams& params,
                                 TensorView dz, TensorView dq, TensorView dk, TensorView dv) = 0;
  // The interventions' gradient rules at one hook (RowOpsBackwardHost): `grad` [T, ...] in
  // place; `x` the hook's rows before the ops (empty unless ReadsInput(plan)).
  virtual void RowOpsBackward(TensorView grad, TensorView x, const RowOpPlan& plan) = 0;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_BACKEND_GRADIENT_OPS_H_
