// Private state of Model shared by model_load.cc and model_forward.cc.
#ifndef LENSD_ENGINE_RUNTIME_MODEL_INTERNAL_H_
#define LENSD_ENGINE_RUNTIME_MODEL_INTERNAL_H_

#include <memory>
#include <vector>

#include "engine/runtime/layer_store.h"
#include "engine/runtime/model.h"

namespace lensd {

// The layers [first, end) of one device, with their weights and KV pools in device memory.
struct Model::Shard {
  std::unique_ptr<Backend> backend;
  int first = 0;
  int end = 0;
  int rank = 0;                                // tensor-parallel rank within the stage
  Communicator* comm = nullptr;                // the stage's tensor-parallel group (tp > 1)
  int n_heads = 0, n_kv_heads = 0, d_mlp = 0;  // this rank's part
  LayerStore layers;                           // index: layer - first
  EmbedWeights embed;                          // first shard only
  HeadWeights head;                            // last shard only
  std::vector<Buffer> inv_freq;                // per local layer [rotary_dim / 2], rotary models
  std::vector<Buffer> k_pool;                  // per local layer [blocks * block_size, Hkv, dh]
  std::vector<Buffer> v_pool;
  size_t weight_bytes = 0;
  size_t kv_bytes = 0;
};

// b.Allocate inside a step. When it fails, the backend has recorded the error and skips every
// later op (Backend::TakeError): the step runs to its end on a buffer of that shape without
// memory, and Forward fails it.
inline Buffer AllocateInStep(Backend& b, DType dtype, Shape shape) {
  absl::StatusOr<Buffer> made = b.Allocate(dtype, shape);
  return made.ok() ? std::move(*made) : Buffer(nullptr, dtype, shape, nullptr);
}

// What one step computes, laid out once (BuildStepPlan) and then only read: every rank and
// stage of the step shares it.
struct StepPlan {
  const std::vector<SeqInput>* batch = nullptr;
  HookSink* hooks = nullptr;
  int tokens = 0;
  std::vector<int32_t> ids, positions, slots;  // [tokens], host
  std::vector<int> q_begin;                    // per sequence: its first row
  std::vector<PlanSeq> plan_seqs;              // per sequence, for intervention plans
  bool any_interventions = false;

  // True when some sequence of the step has interventions at `id`.
  bool Intervened(HookId id) const;
  // True when some sequence of the step captures `id`.
  bool Wants(HookId id) const;
};

// The plan of `batch` (token rows in batch order; KV slots from the block tables).
StepPlan BuildStepPlan(const std::vector<SeqInput>& batch, HookSink* hooks, int block_size);

// Per-call state of Forward on one rank: the shared plan, the residual and its moves.
struct Model::Step {
  const StepPlan* plan = nullptr;
  int rank = 0;            // tensor-parallel rank this step runs (one Step per rank)
  Shard* shard = nullptr;  // where the residual lives
  Buffer x;                // residual [tokens, D] on `shard`
  // The residual's move to the next stage, in two halves so that each backend is only used
  // by its own thread: the sending stage fills `x` (now on the next stage) through a peer
  // copy it queued (`ready`: what the receiver waits for) or through `host`; the receiving
  // stage waits for it or uploads `host`. incoming[s]: stage s's buffer for it, allocated
  // before pipelined stage threads start (empty: allocated when sending, by one thread).
  std::vector<Buffer> incoming;
  std::shared_ptr<void> ready;
  std::vector<float> host;
  std::vector<Buffer> scratch;  // freed at each block boundary
  ForwardResult result;         // rank 0

  bool Intervened(HookId id) const { return plan->Intervened(id); }
  bool Wants(HookId id) const { return plan->Wants(id); }
  TensorView Scratch(Backend& b, Shape s) {
    scratch.push_back(AllocateInStep(b, DType::kF32, s));
    return scratch.back().view();
  }
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_MODEL_INTERNAL_H_
