// What one forward step computes (StepPlan, built once and shared by every rank and stage)
// and one rank's view of it on one device (RankContext): the inputs of the block math
// (blocks.h) and of the hook points (step_hooks.h).
#ifndef LENSD_ENGINE_RUNTIME_STEP_CONTEXT_H_
#define LENSD_ENGINE_RUNTIME_STEP_CONTEXT_H_

#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/communicator.h"
#include "engine/model/config.h"
#include "engine/runtime/hooks.h"
#include "engine/runtime/interventions.h"
#include "engine/runtime/model.h"

namespace lensd {

// b.Allocate inside a step. When it fails, the backend has recorded the error and skips every
// later op (Backend::TakeError): the step runs to its end on a buffer of that shape without
// memory, and Forward fails it.
inline Buffer AllocateInStep(Backend& b, DType dtype, Shape shape) {
  absl::StatusOr<Buffer> made = b.Allocate(dtype, shape);
  return made.ok() ? std::move(*made) : Buffer(nullptr, dtype, shape, nullptr);
}

// The batch laid out once: token rows in batch order, KV slots from the block tables.
struct StepPlan {
  const std::vector<SeqInput>* batch = nullptr;
  HookSink* hooks = nullptr;
  int tokens = 0;
  std::vector<int32_t> ids, positions, slots;  // [tokens], host
  std::vector<int> q_begin;                    // per sequence: its first row
  std::vector<PlanSeq> plan_seqs;              // per sequence, for intervention plans
  bool any_interventions = false;
  bool any_attachments = false;
  const HookSeed* seed = nullptr;  // the backward walk's gradient seed at a hook (null: none)

  // True when some sequence of the step has interventions at `id`.
  bool Intervened(HookId id) const;
  // The attachments at `site` in the step, each with the sequences that attached it, in
  // batch order of first use.
  struct Attached {
    const HookAttachment* attachment;
    std::vector<int> seqs;
  };
  std::vector<Attached> AttachedAt(HookId site) const;
  // True when some sequence of the step captures `id`.
  bool Wants(HookId id) const;
};

StepPlan BuildStepPlan(const std::vector<SeqInput>& batch, HookSink* hooks, int block_size);

// Float32 intermediates of a step on one device, freed together (at each block boundary).
class StepScratch {
 public:
  TensorView Take(Backend& b, Shape s) {
    buffers_.push_back(AllocateInStep(b, DType::kF32, s));
    return buffers_.back().view();
  }
  void Clear() { buffers_.clear(); }

 private:
  std::vector<Buffer> buffers_;
};

// One tensor-parallel rank's part of a step on the device holding the current layers.
struct RankContext {
  Backend& b;
  const ModelConfig& config;
  const StepPlan& plan;
  StepScratch& scratch;
  Communicator* comm = nullptr;  // the stage's tensor-parallel group (null: one rank)
  int rank = 0;
  int tp = 1;
  int64_t n_heads = 0, n_kv_heads = 0, d_mlp = 0;  // this rank's part
  std::mutex* capture_mu = nullptr;                // serialises HookSink::Capture across devices

  TensorView Scratch(Shape s) { return scratch.Take(b, s); }
  bool Intervened(HookId id) const { return plan.Intervened(id); }
  bool Wants(HookId id) const { return plan.Wants(id); }
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_STEP_CONTEXT_H_
