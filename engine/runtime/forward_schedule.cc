// The forward pass's schedule: validation, then the step's stages (pipeline threads over
// micro-batches, or every stage in turn), tensor-parallel ranks (SPMD threads) and the
// residual's moves between devices; the math each stage runs is blocks.h's.
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/runtime/blocks.h"
#include "engine/runtime/model_internal.h"

namespace lensd {

absl::Status Model::Validate(const std::vector<SeqInput>& batch) const {
  for (size_t s = 0; s < batch.size(); ++s) {
    const SeqInput& in = batch[s];
    const int end = in.start_pos + static_cast<int>(in.tokens.size());
    if (in.tokens.empty()) return absl::InvalidArgumentError("empty token sequence");
    if (end > config_.max_positions) {
      return absl::OutOfRangeError(absl::StrCat("sequence of ", end,
                                                " tokens exceeds the model's context length ",
                                                config_.max_positions));
    }
    if (in.block_table == nullptr ||
        static_cast<int>(in.block_table->size()) * blocks_->block_size() < end) {
      return absl::InternalError("block table does not cover the sequence");
    }
    for (int32_t id : in.tokens) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

namespace {

// A micro-batch's view of the caller's sink: its sequences get their indices in the whole
// batch.
class MicroBatchSink : public HookSink {
 public:
  MicroBatchSink(HookSink* inner, int offset) : inner_(inner), offset_(offset) {}
  bool Wants(int seq, HookId id) const override { return inner_->Wants(offset_ + seq, id); }
  bool WantsAny(int seq) const override { return inner_->WantsAny(offset_ + seq); }
  void Capture(int seq, HookId id, TensorView value) override {
    inner_->Capture(offset_ + seq, id, value);
  }

 private:
  HookSink* inner_;
  int offset_;
};

}  // namespace

absl::StatusOr<ForwardResult> Model::Forward(const std::vector<SeqInput>& batch, HookSink* hooks) {
  RETURN_IF_ERROR(Validate(batch));
  ForwardResult result = ForwardDevices(batch, hooks);
  // A backend that could not finish its part (device memory exhausted, no GEMM algorithm)
  // skipped the rest of it: this step fails, the model stays usable.
  absl::Status failed;
  for (const auto& shard : shards_) failed.Update(shard->backend->TakeError());
  if (!failed.ok()) return failed;
  return result;
}

ForwardResult Model::ForwardDevices(const std::vector<SeqInput>& batch, HookSink* hooks) {
  const int stages = static_cast<int>(shards_.size()) / tp_;
  // A patch reads another sequence of the batch at the same hook: keep the batch whole.
  const bool patches = std::any_of(batch.begin(), batch.end(), [](const SeqInput& in) {
    return in.interventions != nullptr && in.interventions->HasPatch();
  });
  if (tp_ == 1 && stages > 1 && batch.size() > 1 && !patches) {
    return ForwardPipelined(batch, hooks, stages);
  }
  if (std::optional<GraphKey> key = GraphKeyFor(batch, hooks)) {
    Backend& b = *shards_[0]->backend;
    if (b.BeginGraphStep(*key)) {
      ForwardResult result = ForwardRanks(batch, hooks);
      if (b.EndGraphStep()) return result;
      // Nothing of the step ran (its capture failed): run it normally.
    }
  }
  return ForwardRanks(batch, hooks);
}

std::optional<GraphKey> Model::GraphKeyFor(const std::vector<SeqInput>& batch,
                                           HookSink* hooks) const {
  // Mixtures of experts route on the host mid-step, and longrope's rotary runs follow the
  // batch's lengths: no graph replays them.
  if (!cuda_graphs_ || HasMoe(config_) || RopeSwitch(config_) > 0 || shards_.size() != 1 ||
      shards_[0]->layers.offloaded() > 0) {
    return std::nullopt;
  }
  const int bs = blocks_->block_size();
  int blocks = 1;
  for (size_t s = 0; s < batch.size(); ++s) {
    const SeqInput& in = batch[s];
    if (in.tokens.size() != 1 || in.all_logits || in.interventions != nullptr ||
        in.attachments != nullptr) {
      return std::nullopt;
    }
    if (hooks != nullptr && hooks->WantsAny(static_cast<int>(s))) return std::nullopt;
    blocks = std::max(blocks, (in.start_pos + 1 + bs - 1) / bs);
  }
  int width = 1;  // powers of two: a sequence growing past one needs a new graph
  while (width < blocks) width *= 2;
  return GraphKey{static_cast<int>(batch.size()), width};
}

ForwardResult Model::ForwardRanks(const std::vector<SeqInput>& batch, HookSink* hooks) {
  const StepPlan plan = BuildStepPlan(batch, hooks, blocks_->block_size());
  std::vector<Step> steps(tp_);
  for (int r = 0; r < tp_; ++r) steps[r].plan = &plan, steps[r].rank = r;
  Step& step = steps[0];
  // Tensor parallel: one thread per rank runs the same program on its devices (SPMD); the
  // ranks meet in the communicator's collectives.
  std::vector<std::thread> ranks;
  for (int r = 1; r < tp_; ++r) {
    ranks.emplace_back([this, &steps, r] { RunRank(steps[r]); });
  }
  RunRank(step);
  for (std::thread& t : ranks) t.join();
  FlushCaptures();
  return std::move(step.result);
}

ForwardResult Model::ForwardPipelined(const std::vector<SeqInput>& batch, HookSink* hooks,
                                      int stages) {
  // Micro-batches of consecutive sequences flow through one thread per stage, so stage s
  // works on micro-batch m while stage s+1 works on m-1 (no whole-batch bubble).
  const int n = static_cast<int>(batch.size()), parts = std::min(stages, n);
  std::vector<std::vector<SeqInput>> micro(parts);
  std::vector<int> offset(parts);
  for (int m = 0; m < parts; ++m) {
    offset[m] = m * n / parts;
    micro[m].assign(batch.begin() + offset[m], batch.begin() + (m + 1) * n / parts);
  }
  std::vector<std::unique_ptr<MicroBatchSink>> sinks;
  std::vector<StepPlan> plans;
  std::vector<Step> steps(parts);
  for (int m = 0; m < parts; ++m) {
    sinks.push_back(hooks ? std::make_unique<MicroBatchSink>(hooks, offset[m]) : nullptr);
    plans.push_back(BuildStepPlan(micro[m], sinks[m].get(), blocks_->block_size()));
  }
  for (int m = 0; m < parts; ++m) {
    steps[m].plan = &plans[m];
    // Each later stage's buffer for the incoming residual, allocated here while no stage
    // thread runs (a sending thread must not allocate on the receiver's backend).
    steps[m].incoming.resize(stages);
    for (int s = 1; s < stages; ++s) {
      steps[m].incoming[s] =
          AllocateInStep(*ShardAt(s, 0).backend, DType::kF32, {plans[m].tokens, config_.d_model});
    }
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> stages_done(parts, 0);  // guarded by mu
  std::vector<std::thread> threads;
  for (int s = 0; s < stages; ++s) {
    threads.emplace_back([&, s] {
      Shard& shard = ShardAt(s, 0);
      shard.layers.BeginPass(*shard.backend);
      for (int m = 0; m < parts; ++m) {
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] { return stages_done[m] == s; });
        }
        RunStage(steps[m], s, stages);
        {
          std::lock_guard<std::mutex> lock(mu);
          stages_done[m] = s + 1;
        }
        cv.notify_all();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  FlushCaptures();  // before the micro-batch sinks go
  return MergeResults(steps);
}

ForwardResult Model::MergeResults(const std::vector<Step>& steps) const {
  // Concatenate the micro-batches' logits rows in batch order.
  const int64_t V = config_.vocab_size;
  int64_t rows = 0;
  for (const Step& step : steps) rows += step.result.logits.shape()[0];
  ForwardResult result;
  result.logits = Buffer::Host(DType::kF32, {rows, V});
  int64_t at = 0;
  for (const Step& step : steps) {
    for (int first : step.result.first_row)
      result.first_row.push_back(static_cast<int>(at) + first);
    std::memcpy(result.logits.As<float>() + at * V, step.result.logits.As<float>(),
                step.result.logits.NumBytes());
    at += step.result.logits.shape()[0];
  }
  return result;
}

void Model::FlushCaptures() {
  for (auto& shard : shards_) shard->backend->FlushCaptures();
}

void Model::RunRank(Step& step) {
  const int stages = static_cast<int>(shards_.size()) / tp_;
  for (int s = 0; s < stages; ++s)
    ShardAt(s, step.rank).layers.BeginPass(*ShardAt(s, step.rank).backend);
  for (int s = 0; s < stages; ++s) RunStage(step, s, stages);
}

RankContext Model::ContextFor(Step& step, Shard& shard) {
  return {.b = *shard.backend,
          .config = config_,
          .plan = *step.plan,
          .scratch = step.scratch,
          .comm = shard.comm,
          .rank = step.rank,
          .tp = tp_,
          .n_heads = shard.n_heads,
          .n_kv_heads = shard.n_kv_heads,
          .d_mlp = shard.d_mlp,
          .capture_mu = &capture_mu_};
}

void Model::RunStage(Step& step, int stage, int stages) {
  Shard& shard = ShardAt(stage, step.rank);
  RankContext c = ContextFor(step, shard);
  if (stage == 0) {
    step.shard = &shard;
    step.x = EmbedForward(c, shard.embed);
  } else {
    ReceiveResidual(step, shard);
  }
  for (int layer = shard.first; layer < shard.end; ++layer) {
    step.scratch.Clear();
    if (step.inputs != nullptr) {
      Buffer& kept = (*step.inputs)[layer];
      kept = AllocateInStep(*shard.backend, DType::kF32, step.x.shape());
      shard.backend->Copy(step.x.view(), kept.view());
    }
    BlockForward(c, InputsOf(shard, layer), step.x.view());
  }
  if (stage + 1 < stages) {
    SendResidual(step, ShardAt(stage + 1, step.rank), stage + 1);
  } else if (step.rank == 0) {
    step.scratch.Clear();
    step.result = HeadForward(c, shard.head, step.x.view());
  }
}

LayerInputs Model::InputsOf(Shard& shard, int layer) {
  const int local = layer - shard.first;
  return {.layer = layer,
          .w = shard.layers.Get(local, *shard.backend),
          .inv_freq = config_.learned_positions ? TensorView{} : shard.inv_freq[local].view(),
          .kv = {shard.k_pool[local].view(), shard.v_pool[local].view(), blocks_->block_size()}};
}

void Model::SendResidual(Step& step, Shard& to, int to_stage) {
  if (step.incoming.size() <= static_cast<size_t>(to_stage)) step.incoming.resize(to_stage + 1);
  Buffer& moved = step.incoming[to_stage];
  if (moved.empty()) moved = AllocateInStep(*to.backend, DType::kF32, step.x.shape());
  // Peer-to-peer when the devices have a direct path (CUDA P2P / same card), queued on the
  // sender's stream; else through host memory (virtual CPU devices, GPUs without peer access).
  Backend& from = *step.shard->backend;
  if (!from.CopyToPeer(*to.backend, step.x.view(), moved.view(), &step.ready)) {
    step.host.resize(static_cast<size_t>(step.x.shape().NumElements()));
    from.Download(step.x.view(), step.host.data());
  }
  step.x = std::move(moved);  // the sender's buffer is freed here, on its own thread
}

void Model::ReceiveResidual(Step& step, Shard& to) {
  if (step.ready != nullptr) {
    to.backend->WaitFor(step.ready);
  } else {
    to.backend->Upload(step.host.data(), step.x.view());
  }
  step.ready.reset();
  step.host.clear();
  step.shard = &to;
}

}  // namespace lensd
