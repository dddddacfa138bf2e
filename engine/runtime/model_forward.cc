// The forward pass: one implementation for every family, written against Backend.
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
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

StepPlan BuildStepPlan(const std::vector<SeqInput>& batch, HookSink* hooks, int block_size) {
  StepPlan plan;
  plan.batch = &batch;
  plan.hooks = hooks;
  const int bs = block_size;
  for (const SeqInput& in : batch) {
    plan.plan_seqs.push_back({plan.tokens, static_cast<int>(in.tokens.size()), in.start_pos,
                              in.interventions, in.prompt_index});
    plan.any_interventions |= in.interventions != nullptr;
    plan.q_begin.push_back(plan.tokens);
    for (size_t i = 0; i < in.tokens.size(); ++i) {
      const int pos = in.start_pos + static_cast<int>(i);
      plan.ids.push_back(in.tokens[i]);
      plan.positions.push_back(pos);
      plan.slots.push_back((*in.block_table)[pos / bs] * bs + pos % bs);
    }
    plan.tokens += static_cast<int>(in.tokens.size());
  }
  return plan;
}

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
  if (!cuda_graphs_ || shards_.size() != 1 || shards_[0]->layers.offloaded() > 0) {
    return std::nullopt;
  }
  const int bs = blocks_->block_size();
  int blocks = 1;
  for (size_t s = 0; s < batch.size(); ++s) {
    const SeqInput& in = batch[s];
    if (in.tokens.size() != 1 || in.all_logits || in.interventions != nullptr) return std::nullopt;
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

void Model::RunRank(Step& step) {
  const int stages = static_cast<int>(shards_.size()) / tp_;
  for (int s = 0; s < stages; ++s)
    ShardAt(s, step.rank).layers.BeginPass(*ShardAt(s, step.rank).backend);
  for (int s = 0; s < stages; ++s) RunStage(step, s, stages);
}

void Model::RunStage(Step& step, int stage, int stages) {
  Shard& shard = ShardAt(stage, step.rank);
  if (stage == 0) {
    step.shard = &shard;
    RunEmbed(step);
  } else {
    ReceiveResidual(step, shard);
  }
  for (int layer = shard.first; layer < shard.end; ++layer) RunBlock(step, shard, layer);
  if (stage + 1 < stages) {
    SendResidual(step, ShardAt(stage + 1, step.rank), stage + 1);
  } else if (step.rank == 0) {
    step.result = RunHead(step);
  }
}

void Model::RunEmbed(Step& step) {
  Shard& shard = *step.shard;
  Backend& b = *shard.backend;
  step.x = AllocateInStep(b, DType::kF32, {step.plan->tokens, config_.d_model});
  b.Gather(shard.embed.w_e.view(), step.plan->ids.data(), step.x.view());
  Hook(step, b, {HookPoint::kEmbed, -1}, step.x.view());
  if (!shard.embed.w_pos.empty()) {
    TensorView pe = step.Scratch(b, {step.plan->tokens, config_.d_model});
    b.Gather(shard.embed.w_pos.view(), step.plan->positions.data(), pe);
    Hook(step, b, {HookPoint::kPosEmbed, -1}, pe);
    b.Add(step.x.view(), pe, step.x.view());
  }
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

void Model::RunBlock(Step& step, Shard& shard, int layer) {
  step.scratch.clear();
  Backend& b = *shard.backend;
  const LayerWeights& w = shard.layers.Get(layer - shard.first, b);
  const LayerSpec& spec = config_.layers[layer];
  TensorView x = step.x.view();
  Hook(step, b, {HookPoint::kResidPre, layer}, x);
  TensorView attn_in = PreNorm(step, shard, w, x, layer, 1);
  TensorView attn_out =
      PostNorm(step, shard, w, RunAttention(step, shard, w, layer, attn_in), layer, 1);
  Hook(step, b, {HookPoint::kAttnOut, layer}, attn_out);
  TensorView mlp_out;
  if (spec.parallel_residual) {
    mlp_out = RunMlp(step, shard, w, layer, PreNorm(step, shard, w, x, layer, 2));
    b.Add(x, attn_out, x);
  } else {
    b.Add(x, attn_out, x);
    Hook(step, b, {HookPoint::kResidMid, layer}, x);
    mlp_out = RunMlp(step, shard, w, layer, PreNorm(step, shard, w, x, layer, 2));
  }
  mlp_out = PostNorm(step, shard, w, mlp_out, layer, 2);
  Hook(step, b, {HookPoint::kMlpOut, layer}, mlp_out);
  b.Add(x, mlp_out, x);
  Hook(step, b, {HookPoint::kResidPost, layer}, x);
}

TensorView Model::PreNorm(Step& step, Shard& shard, const LayerWeights& w, TensorView x, int layer,
                          int which) {
  if (!HasPreNorms(config_.layers[layer].norms)) return x;  // the sublayer reads the residual
  return which == 1 ? NormWithHooks(step, shard, x, w.ln1_w, w.ln1_b, HookPoint::kLn1Scale,
                                    HookPoint::kLn1Normalized, layer)
                    : NormWithHooks(step, shard, x, w.ln2_w, w.ln2_b, HookPoint::kLn2Scale,
                                    HookPoint::kLn2Normalized, layer);
}

TensorView Model::PostNorm(Step& step, Shard& shard, const LayerWeights& w, TensorView out,
                           int layer, int which) {
  if (!HasPostNorms(config_.layers[layer].norms)) return out;
  if (which == 1) {
    return NormWithHooks(step, shard, out, w.ln1_post_w, w.ln1_post_b, HookPoint::kLn1PostScale,
                         HookPoint::kLn1PostNormalized, layer);
  }
  return NormWithHooks(step, shard, out, w.ln2_post_w, w.ln2_post_b, HookPoint::kLn2PostScale,
                       HookPoint::kLn2PostNormalized, layer);
}

Model::LayerMaps Model::PrepareMaps(Step& step, Backend& b, int layer, int64_t heads) {
  const HookId ids[2] = {{HookPoint::kAttnScores, layer}, {HookPoint::kPattern, layer}};
  LayerMaps maps;
  int64_t sizes[2] = {0, 0};
  for (size_t s = 0; s < step.plan->batch->size(); ++s) {
    const SeqInput& in = (*step.plan->batch)[s];
    maps.seqs.push_back({step.plan->q_begin[s],
                         static_cast<int>(in.tokens.size()),
                         in.start_pos,
                         in.block_table->data(),
                         {},
                         {}});
    const int64_t n = heads * in.tokens.size() * (in.start_pos + in.tokens.size());
    for (int m = 0; m < 2; ++m) {
      const bool wanted =
          step.plan->hooks != nullptr && step.plan->hooks->Wants(static_cast<int>(s), ids[m]);
      const bool edited = in.interventions != nullptr && in.interventions->Touches(ids[m]);
      maps.offsets[m].push_back(wanted || edited ? sizes[m] : -1);
      if (wanted || edited) sizes[m] += n;
    }
  }
  // One buffer per map kind: interventions plan over all sequences' maps at once.
  for (int m = 0; m < 2; ++m) {
    if (sizes[m] == 0) continue;
    maps.buffers[m] = step.Scratch(b, {sizes[m]});
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

TensorView Model::RunAttention(Step& step, Shard& shard, const LayerWeights& w, int layer,
                               TensorView n1) {
  Backend& b = *shard.backend;
  const int64_t T = step.plan->tokens, H = shard.n_heads, Hkv = shard.n_kv_heads,
                dh = config_.d_head;
  TensorView q = step.Scratch(b, {T, H, dh}), k = step.Scratch(b, {T, Hkv, dh});
  TensorView v = step.Scratch(b, {T, Hkv, dh});
  b.Linear(n1, w.wq.view(), w.bq.view(), q.Reshaped({T, H * dh}));
  b.Linear(n1, w.wk.view(), w.bk.view(), k.Reshaped({T, Hkv * dh}));
  b.Linear(n1, w.wv.view(), w.bv.view(), v.Reshaped({T, Hkv * dh}));
  HookSplit(step, b, {HookPoint::kQ, layer}, q);
  HookSplit(step, b, {HookPoint::kK, layer}, k);
  HookSplit(step, b, {HookPoint::kV, layer}, v);
  const LayerSpec& spec = config_.layers[layer];
  const int local = layer - shard.first;
  if (!config_.learned_positions) {
    const TensorView freq = shard.inv_freq[local].view();
    b.Rope(q, freq, spec.rope.rotary_dim, step.plan->positions.data());
    b.Rope(k, freq, spec.rope.rotary_dim, step.plan->positions.data());
    HookSplit(step, b, {HookPoint::kRotQ, layer}, q);
    HookSplit(step, b, {HookPoint::kRotK, layer}, k);
  }
  KvLayerView kv{shard.k_pool[local].view(), shard.v_pool[local].view(), blocks_->block_size()};
  b.WriteKv(k, v, step.plan->slots.data(), kv);
  LayerMaps maps = PrepareMaps(step, b, layer, H);
  TensorView z = step.Scratch(b, {T, H, dh});
  b.Attention(q, kv, maps.seqs, spec.attention, z);
  RerunEditedAttention(step, b, q, kv, maps, layer, z);
  EmitAttentionMaps(step, b, maps.seqs, layer);
  HookSplit(step, b, {HookPoint::kZ, layer}, z);
  TensorView out = step.Scratch(b, {T, config_.d_model});
  b.Linear(z.Reshaped({T, H * dh}), w.wo.view(), w.bo.view(), out);
  if (tp_ > 1) shard.comm->AllReduceSum(step.rank, out, b);
  return out;
}

TensorView Model::RunMlp(Step& step, Shard& shard, const LayerWeights& w, int layer,
                         TensorView n2) {
  Backend& b = *shard.backend;
  const int64_t T = step.plan->tokens, M = shard.d_mlp;
  TensorView pre = step.Scratch(b, {T, M}), post = step.Scratch(b, {T, M});
  b.Linear(n2, w.w_in.view(), w.b_in.view(), pre);
  HookSplit(step, b, {HookPoint::kMlpPre, layer}, pre);
  if (config_.layers[layer].mlp == MlpKind::kGated) {
    TensorView lin = step.Scratch(b, {T, M});
    b.Linear(n2, w.w_up.view(), w.b_up.view(), lin);
    HookSplit(step, b, {HookPoint::kMlpPreLinear, layer}, lin);
    b.GatedActivation(config_.act, pre, lin, post);
  } else {
    b.Activation(config_.act, pre, post);
  }
  HookSplit(step, b, {HookPoint::kMlpPost, layer}, post);
  TensorView out = step.Scratch(b, {T, config_.d_model});
  b.Linear(post, w.w_out.view(), w.b_out.view(), out);
  if (tp_ > 1) shard.comm->AllReduceSum(step.rank, out, b);
  return out;
}

ForwardResult Model::RunHead(Step& step) {
  step.scratch.clear();
  Shard& shard = *step.shard;
  Backend& b = *shard.backend;
  TensorView y = NormWithHooks(step, shard, step.x.view(), shard.head.lnf_w, shard.head.lnf_b,
                               HookPoint::kLnFinalScale, HookPoint::kLnFinalNormalized, -1);
  Hook(step, b, {HookPoint::kUnembedIn, -1}, y);
  ForwardResult result;
  std::vector<int32_t> rows;
  for (size_t s = 0; s < step.plan->batch->size(); ++s) {
    const SeqInput& in = (*step.plan->batch)[s];
    const int n = static_cast<int>(in.tokens.size());
    result.first_row.push_back(static_cast<int>(rows.size()));
    for (int i = in.all_logits ? 0 : n - 1; i < n; ++i) rows.push_back(step.plan->q_begin[s] + i);
  }
  const int64_t R = static_cast<int64_t>(rows.size()), V = config_.vocab_size;
  TensorView selected = step.Scratch(b, {R, config_.d_model});
  b.Gather(y, rows.data(), selected);
  TensorView logits = step.Scratch(b, {R, V});
  b.Linear(selected, shard.head.w_u.view(), shard.head.b_u.view(), logits);
  EditLogits(step, b, logits, result.first_row);
  const HookId out_id{HookPoint::kUnembedOut, -1};
  for (size_t s = 0; s < step.plan->batch->size(); ++s) {
    const SeqInput& in = (*step.plan->batch)[s];
    if (!in.all_logits || step.plan->hooks == nullptr || !step.plan->hooks->Wants(int(s), out_id))
      continue;
    const int64_t first = result.first_row[s];
    Capture(step, b, int(s), out_id, logits.Rows(first, first + in.tokens.size()));
  }
  result.logits = Buffer::Host(DType::kF32, {R, V});
  b.Download(logits, result.logits.As<float>());
  return result;
}

}  // namespace lensd
