#include "engine/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace lensd {

absl::Status ValidateSampling(const SamplingParams& p) {
  auto bad = [](const char* field, double v, const char* want) {
    return absl::InvalidArgumentError(absl::StrCat(field, " = ", v, " is invalid: ", want));
  };
  if (!(p.temperature >= 0) || std::isinf(p.temperature)) {
    return bad("temperature", p.temperature, "must be finite and >= 0");
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) return bad("top_p", p.top_p, "must be in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p <= 1)) return bad("min_p", p.min_p, "must be in [0, 1]");
  if (p.top_k < 0) return bad("top_k", p.top_k, "must be >= 0 (0 disables it)");
  if (!(p.repetition_penalty > 0) || std::isinf(p.repetition_penalty)) {
    return bad("repetition_penalty", p.repetition_penalty, "must be finite and > 0");
  }
  if (!std::isfinite(p.frequency_penalty)) return bad("frequency_penalty", p.frequency_penalty, "must be finite");
  if (!std::isfinite(p.presence_penalty)) return bad("presence_penalty", p.presence_penalty, "must be finite");
  if (p.max_new_tokens < 0) return bad("max_new_tokens", p.max_new_tokens, "must be >= 0");
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int Sampler::Sample(const float* logits, int vocab, const std::vector<int>& prompt,
                    const std::vector<int>& output) {
  std::vector<float> l(logits, logits + vocab);
  if (params_.repetition_penalty != 1.0f) {
    std::vector<bool> seen(vocab, false);
    for (const auto* ids : {&prompt, &output}) {
      for (int id : *ids) {
        if (id < 0 || id >= vocab || seen[id]) continue;
        seen[id] = true;
        l[id] = l[id] > 0 ? l[id] / params_.repetition_penalty : l[id] * params_.repetition_penalty;
      }
    }
  }
  if (params_.frequency_penalty != 0 || params_.presence_penalty != 0) {
    absl::flat_hash_map<int, int> counts;
    for (int id : output) ++counts[id];
    for (const auto& [id, n] : counts) {
      if (id >= 0 && id < vocab) l[id] -= params_.frequency_penalty * n + params_.presence_penalty;
    }
  }
  if (params_.temperature == 0.0f) {
    return static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
  }
  // Candidates sorted by logit, then truncated by top-k, min-p and top-p on the
  // temperature-scaled distribution.
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
  size_t keep = params_.top_k > 0 ? std::min<size_t>(params_.top_k, vocab) : vocab;
  std::vector<double> p(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    p[i] = std::exp((double{l[order[i]]} - l[order[0]]) / params_.temperature);
    sum += p[i];
  }
  for (auto& x : p) x /= sum;
  if (params_.min_p > 0) {
    size_t n = 1;
    while (n < keep && p[n] >= params_.min_p * p[0]) ++n;
    keep = n;
  }
  double cumulative = 0;
  size_t n = 0;
  while (n < keep) {
    cumulative += p[n++];
    if (cumulative >= params_.top_p) break;
  }
  std::discrete_distribution<size_t> pick(p.begin(), p.begin() + n);
  return order[pick(rng_)];
}

}  // namespace lensd
