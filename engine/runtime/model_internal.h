// Private state of Model shared by model_load.cc and forward_schedule.cc.
#ifndef LENSD_ENGINE_RUNTIME_MODEL_INTERNAL_H_
#define LENSD_ENGINE_RUNTIME_MODEL_INTERNAL_H_

#include <memory>
#include <vector>

#include "engine/runtime/layer_store.h"
#include "engine/runtime/model.h"
#include "engine/runtime/step_context.h"

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
  StepScratch scratch;   // freed at each block boundary
  ForwardResult result;  // rank 0
  // ForwardBackward: each layer's input residual, kept for its recomputation (null: not kept).
  std::vector<Buffer>* inputs = nullptr;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_MODEL_INTERNAL_H_
