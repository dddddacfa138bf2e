// A PatchSweep as a scheduler program: the baseline capture, then the cells (patch_sweep.h).
#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "server/patch_sweep.h"

namespace lensd {
namespace {

// The source activation at one cell, as a value for `set`: the TransformerLens tensor with
// the position axis cut to `position` and the head axis to `head` (-1: kept whole).
FloatTensor SliceCell(const Buffer& act, HookPoint point, int position, int head) {
  // As [1, a1, a2, a3]: token hooks [1, P, 1, D]; per head [1, P, H, dh]; maps [1, H, P, P].
  Shape s = act.shape();
  const bool map = IsAttentionMap(point);
  const int64_t d[4] = {1, s[1], s.rank == 4 ? s[2] : 1, s.rank == 4 ? s[3] : s[2]};
  const int pos_axis = map ? 2 : 1, head_axis = s.rank == 4 ? (map ? 1 : 2) : -1;
  int64_t lo[4] = {0, 0, 0, 0}, n[4] = {1, d[1], d[2], d[3]};
  if (position >= 0) lo[pos_axis] = position, n[pos_axis] = 1;
  if (head >= 0 && head_axis >= 0) lo[head_axis] = head, n[head_axis] = 1;
  FloatTensor out;
  out.shape = s.rank == 4 ? std::vector<int64_t>{1, n[1], n[2], n[3]}
                          : std::vector<int64_t>{1, n[1], n[3]};
  const float* a = act.As<float>();
  for (int64_t i = lo[1]; i < lo[1] + n[1]; ++i) {
    for (int64_t j = lo[2]; j < lo[2] + n[2]; ++j) {
      const float* row = a + (i * d[2] + j) * d[3];
      out.data.insert(out.data.end(), row + lo[3], row + lo[3] + n[3]);
    }
  }
  return out;
}

// Streams each cell's metric as its logits arrive.
class CellsSink : public JobSink {
 public:
  CellsSink(std::shared_ptr<const SweepSpec> spec, std::shared_ptr<SweepObserver> observer,
            Buffer target_logits, Clock::time_point start)
      : spec_(std::move(spec)), observer_(std::move(observer)),
        reference_(std::move(target_logits)), start_(start) {}
  bool Cancelled() const override { return observer_->Cancelled(); }
  void OnToken(int32_t, int) override {}
  void OnTensor(int, HookId, TensorView) override {}
  void OnLogits(int prompt, int first, TensorView value) override {
    v1::SweepCell cell;
    int layer, position, head;
    spec_->Cell(prompt, &layer, &position, &head);
    cell.set_index(prompt), cell.set_layer(layer), cell.set_position(position), cell.set_head(head);
    cell.set_value(SweepMetricValue(*spec_, value.As<float>(), first, reference_.As<float>()));
    if (spec_->metric == SweepSpec::Metric::kLogits) {
      for (int q : spec_->metric_positions) {
        const float* row = value.As<float>() + int64_t{q - first} * spec_->vocab;
        cell.mutable_logits()->Add(row, row + spec_->vocab);
      }
    }
    observer_->OnCell(cell);
  }
  void OnFinish(const absl::Status& status, const JobStats& stats) override {
    v1::SweepDone done;
    done.set_cells(spec_->Cells());
    done.set_prompt_tokens_cached(stats.prompt_tokens_cached);
    done.set_prompt_tokens_computed(int64_t{spec_->Cells()} * static_cast<int64_t>(spec_->target().size()) -
                                    stats.prompt_tokens_cached);
    done.set_total_ms(std::chrono::duration<double, std::milli>(Clock::now() - start_).count());
    observer_->OnFinish(status, done);
  }

 private:
  std::shared_ptr<const SweepSpec> spec_;
  std::shared_ptr<SweepObserver> observer_;
  Buffer reference_;  // the target run's logits [P, V]
  Clock::time_point start_;
};

// What the baseline job leaves for the cells: the source run's activations (attribution: the
// target's too, and the target's gradients), both runs' logits.
struct Baseline {
  std::map<int, Buffer> activations;  // the source run's, per layer
  std::map<int, Buffer> target, grads;  // attribution: the target run's, per layer
  Buffer logits[2];                     // clean, corrupted: [1, P, V]
};

Buffer Copy(TensorView v) {
  Buffer b = Buffer::Host(DType::kF32, v.shape);
  std::memcpy(b.As<void>(), v.data, v.NumBytes());
  return b;
}

// Collects the baseline runs; only a failure is news for the observer (the program goes on).
class BaselineSink : public JobSink {
 public:
  BaselineSink(std::shared_ptr<const SweepSpec> spec, std::shared_ptr<SweepObserver> observer,
               std::shared_ptr<Baseline> out)
      : spec_(std::move(spec)), observer_(std::move(observer)), out_(std::move(out)) {}
  bool Cancelled() const override { return observer_->Cancelled(); }
  void OnToken(int32_t, int) override {}
  void OnTensor(int prompt, HookId id, TensorView value) override {
    if (prompt == (spec_->noising ? 1 : 0)) {
      out_->activations[id.layer] = Copy(value);  // the source run's
    } else if (spec_->attribution) {
      out_->target[id.layer] = Copy(value);
    }
  }
  void OnGradient(int prompt, HookId id, TensorView value) override {
    if (prompt != (spec_->noising ? 1 : 0)) out_->grads[id.layer] = Copy(value);
  }
  void OnLogits(int prompt, int, TensorView value) override { out_->logits[prompt] = Copy(value); }
  void OnFinish(const absl::Status& status, const JobStats&) override {
    if (!status.ok()) observer_->OnFinish(status, v1::SweepDone());
  }

 private:
  std::shared_ptr<const SweepSpec> spec_;
  std::shared_ptr<SweepObserver> observer_;
  std::shared_ptr<Baseline> out_;
};

// The sweep as a program of two jobs: the baseline capture of both runs, then every cell as
// one batched job built from the baseline.
class SweepProgram : public JobProgram {
 public:
  SweepProgram(const ModelConfig& c, std::shared_ptr<const SweepSpec> spec,
               std::shared_ptr<SweepObserver> observer, Clock::time_point deadline)
      : config_(c),
        spec_(std::move(spec)),
        observer_(std::move(observer)),
        deadline_(deadline),
        start_(Clock::now()) {}

  std::optional<Job> Next() override {
    ++phase_;
    absl::StatusOr<std::optional<Job>> next = std::optional<Job>();
    if (phase_ == 1) {
      next = BaselineJob();
    } else if (phase_ == 2) {
      next = spec_->attribution ? AttributionCells() : CellsJob();
    }
    if (next.ok()) return std::move(*next);
    observer_->OnFinish(next.status(), v1::SweepDone());
    return std::nullopt;
  }

 private:
  absl::StatusOr<std::optional<Job>> BaselineJob() {
    Job job;
    job.kind = Job::Kind::kCapture;
    job.prompts = {spec_->clean, spec_->corrupted};
    std::vector<std::string> names;
    for (int l : spec_->layers) names.push_back(HookName({spec_->point, l}));
    ASSIGN_OR_RETURN(job.hooks, HookSelection::Parse(config_, names));
    if (spec_->attribution) job.objective = spec_->AsObjective();
    job.deadline = deadline_;
    job.sink = std::make_shared<BaselineSink>(spec_, observer_, baseline_);
    return job;
  }

  void SendHeader() {
    const SweepSpec& s = *spec_;
    const Buffer* logits = baseline_->logits;
    v1::SweepHeader h;
    h.set_component_hook(absl::StrCat("blocks.{L}.", HookName({s.point, 0}).substr(9)));
    h.mutable_layers()->Add(s.layers.begin(), s.layers.end());
    h.mutable_positions()->Add(s.positions.begin(), s.positions.end());
    h.mutable_heads()->Add(s.heads.begin(), s.heads.end());
    h.mutable_clean_ids()->mutable_ids()->Add(s.clean.begin(), s.clean.end());
    h.mutable_corrupted_ids()->mutable_ids()->Add(s.corrupted.begin(), s.corrupted.end());
    const float* target = logits[s.noising ? 0 : 1].As<float>();
    h.set_clean_metric(SweepMetricValue(s, logits[0].As<float>(), 0, target));
    h.set_corrupted_metric(SweepMetricValue(s, logits[1].As<float>(), 0, target));
    h.set_cells(s.Cells());
    if (s.metric == SweepSpec::Metric::kLogits) {
      for (int q : s.metric_positions) {
        for (int p : {0, 1}) {
          const float* row = logits[p].As<float>() + int64_t{q} * s.vocab;
          (p == 0 ? h.mutable_clean_logits() : h.mutable_corrupted_logits())->Add(row, row + s.vocab);
        }
      }
    }
    observer_->OnHeader(h);
  }

  // Attribution: every cell from the baseline's activations and the target's gradient,
  // Σ (source − target) ⊙ grad over the cell's slice; no job follows.
  absl::StatusOr<std::optional<Job>> AttributionCells() {
    SendHeader();
    const SweepSpec& s = *spec_;
    for (int i = 0; i < s.Cells(); ++i) {
      int layer, position, head;
      s.Cell(i, &layer, &position, &head);
      const FloatTensor src = SliceCell(baseline_->activations.at(layer), s.point, position, head);
      const FloatTensor tgt = SliceCell(baseline_->target.at(layer), s.point, position, head);
      const FloatTensor grad = SliceCell(baseline_->grads.at(layer), s.point, position, head);
      double sum = 0;
      for (size_t k = 0; k < grad.data.size(); ++k) {
        sum += (static_cast<double>(src.data[k]) - tgt.data[k]) * grad.data[k];
      }
      v1::SweepCell cell;
      cell.set_index(i), cell.set_layer(layer), cell.set_position(position), cell.set_head(head);
      cell.set_value(sum);
      observer_->OnCell(cell);
    }
    v1::SweepDone done;
    done.set_cells(s.Cells());
    done.set_prompt_tokens_computed(static_cast<int64_t>(s.clean.size() + s.corrupted.size()));
    done.set_total_ms(std::chrono::duration<double, std::milli>(Clock::now() - start_).count());
    observer_->OnFinish(absl::OkStatus(), done);
    return std::optional<Job>();
  }

  absl::StatusOr<std::optional<Job>> CellsJob() {
    SendHeader();
    const SweepSpec& s = *spec_;
    std::vector<Intervention> list;
    for (int i = 0; i < s.Cells(); ++i) {
      int layer, position, head;
      s.Cell(i, &layer, &position, &head);
      Intervention iv;
      iv.hook = {s.point, layer}, iv.op = InterventionOp::kSet, iv.prompts = {i};
      if (position >= 0) iv.positions.kind = PositionSelector::Kind::kIndices, iv.positions.indices = {position};
      if (head >= 0) iv.heads = {head};
      iv.value = SliceCell(baseline_->activations.at(layer), s.point, position, head);
      list.push_back(std::move(iv));
    }
    const int P = static_cast<int>(s.target().size());
    ASSIGN_OR_RETURN(auto set, InterventionSet::Create(config_, std::move(list),
                                                       std::vector<int>(s.Cells(), P), false, 0));
    Job job;
    job.kind = Job::Kind::kCapture;
    job.prompts.assign(s.Cells(), s.target());
    job.hooks = HookSelection::None(config_);
    job.reuse_prefix = true;
    const int first = *std::min_element(s.metric_positions.begin(), s.metric_positions.end());
    job.logits_from = s.metric_positions == std::vector<int>{P - 1} ? -1 : first;
    job.interventions = std::move(set);
    job.deadline = deadline_;
    job.sink = std::make_shared<CellsSink>(spec_, observer_,
                                           std::move(baseline_->logits[s.noising ? 0 : 1]), start_);
    baseline_.reset();  // the cells carry what they need
    return job;
  }

  const ModelConfig& config_;
  std::shared_ptr<const SweepSpec> spec_;
  std::shared_ptr<SweepObserver> observer_;
  Clock::time_point deadline_, start_;
  int phase_ = 0;
  std::shared_ptr<Baseline> baseline_ = std::make_shared<Baseline>();
};

}  // namespace

std::shared_ptr<JobProgram> MakeSweepProgram(const ModelConfig& c,
                                             std::shared_ptr<const SweepSpec> spec,
                                             std::shared_ptr<SweepObserver> observer,
                                             Clock::time_point deadline) {
  return std::make_shared<SweepProgram>(c, std::move(spec), std::move(observer), deadline);
}

}  // namespace lensd
