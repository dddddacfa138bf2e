// Activation-patching sweeps (the PatchSweep RPC): patch the clean run's activation into the
// corrupted run (or the reverse) at every cell of a grid — (layer, position[, head]) — and
// read a metric of the patched run's logits per cell.
//
// How it runs: one capture of [clean, corrupted] (the component's hooks at the swept layers,
// and logits), which also publishes both runs' KV blocks to the prefix cache; then one job
// whose sequences are the cells: the target prompt with a `set` of the source activation at
// the cell. A cell patching position p reuses the target run's cached blocks before p and
// computes only the rest — the same bits as RunWithCache of [clean, corrupted] with one
// `patch` at that cell, since nothing before p can differ.
#ifndef LENSD_SERVER_PATCH_SWEEP_H_
#define LENSD_SERVER_PATCH_SWEEP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lensd/v1/lensd.pb.h"
#include "server/job.h"
#include "server/request_edge.h"

namespace lensd {

struct SweepSpec {
  enum class Metric { kLogitDiff, kLogProb, kKl, kLogits };
  std::vector<int32_t> clean, corrupted;
  HookPoint point = HookPoint::kResidPre;
  std::vector<int> layers;
  std::vector<int> positions;  // cell positions; empty: every position in one cell
  std::vector<int> heads;      // cell heads; empty: every head in one cell (or not per head)
  bool noising = false;        // source: corrupted, target: clean (else the reverse)
  Metric metric = Metric::kLogitDiff;
  std::vector<int> answer, wrong;     // logit_diff; logprob uses `answer`
  std::vector<int> metric_positions;  // where the metric is read, resolved
  int vocab = 0;
  bool attribution = false;  // SWEEP_METHOD_ATTRIBUTION: cells from one gradient, not patches

  // The metric as a gradient objective (logit_diff, logprob).
  Objective AsObjective() const;

  int Cells() const;
  const std::vector<int32_t>& source() const { return noising ? corrupted : clean; }
  const std::vector<int32_t>& target() const { return noising ? clean : corrupted; }
  // Cell `i` as (layer, position or -1, head or -1), row-major over the grid.
  void Cell(int i, int* layer, int* position, int* head) const;
};

// Validates a request at the edge: INVALID_ARGUMENT naming the field (prompts of different
// lengths, a component the model lacks, bad layers, ids or positions), RESOURCE_EXHAUSTED
// for more cells than `max_cells` or logits beyond the capture budget.
absl::StatusOr<SweepSpec> ToSweepSpec(const v1::PatchSweepRequest& request, const ModelFacts& model,
                                      const ServerLimits& limits, int max_cells);

// The metric of one run's logits `rows` [n, vocab] holding positions [first, first + n);
// `reference` (kl only): the unpatched target run's logits [P, vocab].
double SweepMetricValue(const SweepSpec& spec, const float* rows, int first,
                        const float* reference);

// Receives a sweep's progress on the scheduler thread; must not block. OnFinish comes once,
// last; OnHeader before any OnCell.
class SweepObserver {
 public:
  virtual ~SweepObserver() = default;
  virtual bool Cancelled() const = 0;
  virtual void OnHeader(const v1::SweepHeader& header) = 0;
  virtual void OnCell(const v1::SweepCell& cell) = 0;
  virtual void OnFinish(const absl::Status& status, const v1::SweepDone& done) = 0;
};

// The sweep as a job program (job.h) for Scheduler::Submit: the baseline capture of both
// runs, then the cells; its progress and outcome go to `observer`.
std::shared_ptr<JobProgram> MakeSweepProgram(const ModelConfig& c,
                                             std::shared_ptr<const SweepSpec> spec,
                                             std::shared_ptr<SweepObserver> observer,
                                             Clock::time_point deadline);

}  // namespace lensd

#endif  // LENSD_SERVER_PATCH_SWEEP_H_
