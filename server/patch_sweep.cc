// PatchSweep at the edge: the request validated into a SweepSpec, and the metrics.
#include "server/patch_sweep.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/runtime/objective.h"

namespace lensd {
namespace {

absl::Status Invalid(const std::string& what) { return absl::InvalidArgumentError(what); }

absl::StatusOr<HookPoint> ComponentPoint(v1::SweepComponent c) {
  switch (c) {
    case v1::COMPONENT_UNSPECIFIED:  // the default
    case v1::COMPONENT_RESID_PRE: return HookPoint::kResidPre;
    case v1::COMPONENT_RESID_MID: return HookPoint::kResidMid;
    case v1::COMPONENT_RESID_POST: return HookPoint::kResidPost;
    case v1::COMPONENT_ATTN_OUT: return HookPoint::kAttnOut;
    case v1::COMPONENT_MLP_OUT: return HookPoint::kMlpOut;
    case v1::COMPONENT_Z: return HookPoint::kZ;
    case v1::COMPONENT_Q: return HookPoint::kQ;
    case v1::COMPONENT_K: return HookPoint::kK;
    case v1::COMPONENT_V: return HookPoint::kV;
    case v1::COMPONENT_PATTERN: return HookPoint::kPattern;
    default: break;
  }
  return Invalid("component must be one of RESID_PRE, RESID_MID, RESID_POST, ATTN_OUT, MLP_OUT, "
                 "Z, Q, K, V, PATTERN");
}

absl::Status ToMetric(const v1::SweepMetric& m, int P, int vocab, SweepSpec& s) {
  switch (m.kind_case()) {
    case v1::SweepMetric::kLogitDiff:
      s.metric = SweepSpec::Metric::kLogitDiff;
      RETURN_IF_ERROR(TokenIdList(m.logit_diff().answer_ids(), vocab,
                                  "metric.logit_diff.answer_ids", s.answer));
      RETURN_IF_ERROR(
          TokenIdList(m.logit_diff().wrong_ids(), vocab, "metric.logit_diff.wrong_ids", s.wrong));
      if (std::set<int>(s.answer.begin(), s.answer.end()) ==
          std::set<int>(s.wrong.begin(), s.wrong.end())) {
        return Invalid(
            "metric.logit_diff: answer_ids and wrong_ids name the same tokens, so every cell "
            "would be 0 (is each answer a single token of this model's tokenizer?)");
      }
      break;
    case v1::SweepMetric::kLogprob:
      s.metric = SweepSpec::Metric::kLogProb;
      RETURN_IF_ERROR(TokenIdList(m.logprob().ids(), vocab, "metric.logprob.ids", s.answer));
      break;
    case v1::SweepMetric::kKl: s.metric = SweepSpec::Metric::kKl; break;
    case v1::SweepMetric::kLogits: s.metric = SweepSpec::Metric::kLogits; break;
    case v1::SweepMetric::KIND_NOT_SET:
      return Invalid("metric is empty: set logit_diff, logprob, kl or logits");
  }
  std::set<int> seen;
  for (int k = 0; k < m.positions_size(); ++k) {
    const int pos = m.positions(k) < 0 ? P + m.positions(k) : m.positions(k);
    if (pos < 0 || pos >= P || !seen.insert(pos).second) {
      return Invalid(absl::StrCat("metric.positions[", k, "] = ", m.positions(k), " is out of ",
                                  "range or repeated for prompts of ", P, " tokens"));
    }
    s.metric_positions.push_back(pos);
  }
  if (s.metric_positions.empty()) s.metric_positions = {P - 1};
  return absl::OkStatus();
}

absl::Status ToGrid(const v1::PatchSweepRequest& r, const ModelConfig& c, int P, SweepSpec& s) {
  const PositionSlice layers{r.layers().has_start() ? std::optional<int64_t>(r.layers().start()) : std::nullopt,
                             r.layers().has_stop() ? std::optional<int64_t>(r.layers().stop()) : std::nullopt};
  const auto [l0, l1] = layers.Resolve(c.n_layers);
  if (l1 <= l0) return Invalid(absl::StrCat("layers selects none of the ", c.n_layers, " layers"));
  for (int64_t l = l0; l < l1; ++l) s.layers.push_back(static_cast<int>(l));
  if (!r.all_positions()) {
    for (int p = 0; p < P; ++p) s.positions.push_back(p);
  }
  const int heads = HeadsOf(c, s.point);
  if (heads == 0 && r.all_heads()) return Invalid("all_heads applies to per-head components only");
  if (heads > 0 && !r.all_heads()) {
    for (int h = 0; h < heads; ++h) s.heads.push_back(h);
  }
  return absl::OkStatus();
}

// The metric of one row of logits; `ref` the target run's row (kl: KL(target || patched)).
double RowMetric(const SweepSpec& s, const float* l, const float* ref) {
  switch (s.metric) {
    case SweepSpec::Metric::kLogitDiff:
      return LogitDiffRow(l, s.answer, s.wrong, 0, nullptr);
    case SweepSpec::Metric::kLogProb:
      return LogProbRow(l, s.answer, s.vocab, 0, nullptr);
    case SweepSpec::Metric::kKl: {
      const double lz = LogSumExpRow(l, s.vocab), rz = LogSumExpRow(ref, s.vocab);
      double kl = 0;
      for (int v = 0; v < s.vocab; ++v) {
        const double lp = ref[v] - rz;
        kl += std::exp(lp) * (lp - (l[v] - lz));
      }
      return kl;
    }
    case SweepSpec::Metric::kLogits: return 0;
  }
  return 0;
}

}  // namespace

Objective SweepSpec::AsObjective() const {
  Objective o;
  o.kind = metric == Metric::kLogProb ? Objective::Kind::kLogProb : Objective::Kind::kLogitDiff;
  o.answer = answer, o.wrong = wrong, o.positions = metric_positions;
  return o;
}

int SweepSpec::Cells() const {
  return static_cast<int>(layers.size()) * std::max<int>(1, static_cast<int>(positions.size())) *
         std::max<int>(1, static_cast<int>(heads.size()));
}

void SweepSpec::Cell(int i, int* layer, int* position, int* head) const {
  const int nh = std::max<int>(1, static_cast<int>(heads.size()));
  const int np = std::max<int>(1, static_cast<int>(positions.size()));
  *head = heads.empty() ? -1 : heads[i % nh];
  *position = positions.empty() ? -1 : positions[i / nh % np];
  *layer = layers[i / nh / np];
}

absl::StatusOr<SweepSpec> ToSweepSpec(const v1::PatchSweepRequest& request, const ModelFacts& model,
                                      const ServerLimits& limits, int max_cells) {
  const ModelConfig& c = *model.config;
  SweepSpec s;
  s.vocab = c.vocab_size;
  ASSIGN_OR_RETURN(s.clean, PromptTokens(request.clean(), "clean", model, limits));
  ASSIGN_OR_RETURN(s.corrupted, PromptTokens(request.corrupted(), "corrupted", model, limits));
  const int P = static_cast<int>(s.clean.size());
  if (s.corrupted.size() != s.clean.size()) {
    return Invalid(absl::StrCat("clean has ", P, " tokens and corrupted ", s.corrupted.size(),
                                "; a sweep patches position by position, so they must match"));
  }
  ASSIGN_OR_RETURN(s.point, ComponentPoint(request.component()));
  if (!HookFromName(c, HookName({s.point, 0})).ok()) {
    return Invalid(absl::StrCat("component ", v1::SweepComponent_Name(request.component()),
                                ": this model (", c.model_type, ") has no ",
                                HookName({s.point, 0})));
  }
  s.noising = request.noising();
  s.attribution = request.method() == v1::SWEEP_METHOD_ATTRIBUTION;
  if (request.method() != v1::SWEEP_METHOD_UNSPECIFIED &&
      request.method() != v1::SWEEP_METHOD_EXACT && !s.attribution) {
    return Invalid(absl::StrCat("method = ", static_cast<int>(request.method()),
                                " is not EXACT or ATTRIBUTION"));
  }
  RETURN_IF_ERROR(ToGrid(request, c, P, s));
  RETURN_IF_ERROR(ToMetric(request.metric(), P, c.vocab_size, s));
  if (s.attribution) {
    if (!model.gradients.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("method ATTRIBUTION: ", model.gradients.message()));
    }
    if (s.metric != SweepSpec::Metric::kLogitDiff && s.metric != SweepSpec::Metric::kLogProb) {
      return Invalid(
          "method ATTRIBUTION takes the logit_diff or logprob metric: kl's gradient at the "
          "unpatched target run is zero, and logits are not one number");
    }
  }
  if (s.Cells() > max_cells) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the sweep has ", s.Cells(), " cells; this server allows ", max_cells,
        " (--max-sweep-cells): select fewer layers, or patch all positions or heads at once"));
  }
  const int64_t logit_bytes = int64_t{s.Cells() + 2} * static_cast<int64_t>(s.metric_positions.size()) *
                              c.vocab_size * 4;
  if (s.metric == SweepSpec::Metric::kLogits && logit_bytes > limits.max_capture_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the sweep's logits are ", logit_bytes, " bytes; this server allows ",
        limits.max_capture_bytes, " per request (fewer cells, or a scalar metric)"));
  }
  RETURN_IF_ERROR(CheckKvFits(3 * P, "a sweep's two runs and a cell", model));
  return s;
}

double SweepMetricValue(const SweepSpec& spec, const float* rows, int first, const float* reference) {
  double sum = 0;
  for (int q : spec.metric_positions) {
    const float* ref = reference != nullptr ? reference + int64_t{q} * spec.vocab : nullptr;
    sum += RowMetric(spec, rows + int64_t{q - first} * spec.vocab, ref);
  }
  return sum / static_cast<double>(spec.metric_positions.size());
}

}  // namespace lensd
