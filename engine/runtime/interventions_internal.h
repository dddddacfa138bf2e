// Private to interventions.cc and intervention_plan.cc: a hook's layout and the validated,
// per-prompt-resolved form of one intervention.
#ifndef LENSD_ENGINE_RUNTIME_INTERVENTIONS_INTERNAL_H_
#define LENSD_ENGINE_RUNTIME_INTERVENTIONS_INTERNAL_H_

#include <algorithm>
#include <array>
#include <vector>

#include "engine/runtime/interventions.h"

namespace lensd {

// How a hook's per-position values are laid out: a vector of `b` elements (a = 1), `a` heads
// of `b` elements, or (attention maps) `a` heads of one score per key.
struct Geometry {
  enum class Kind { kVector, kHeads, kMap };
  Kind kind = Kind::kVector;
  int64_t a = 1, b = 0;  // b = 0 for maps: the key count varies by step
};

// Chained splitmix64 over every field of `list` (floats by their bits); never 0.
uint64_t FingerprintOf(const std::vector<Intervention>& list);

// From the hook-point registry (hook_points.h).
inline Geometry GeometryOf(const ModelConfig& c, HookPoint p) {
  using K = Geometry::Kind;
  if (IsAttentionMap(p)) return {K::kMap, HeadsOf(c, p), 0};
  const int heads = HeadsOf(c, p);
  return {heads > 0 ? K::kHeads : K::kVector, heads > 0 ? heads : 1, RowWidth(c, p)};
}

struct InterventionSet::Prepared {
  struct PerPrompt {
    Selection positions, keys;
    Selection source, source_keys;  // patch: in the source prompt
  };
  Geometry geometry;
  std::vector<int> applies_to;      // prompt indices, ascending
  std::vector<PerPrompt> prompts;   // parallel to applies_to
  // The resolved selections for `prompt`; null when the intervention does not apply to it.
  const PerPrompt* For(int prompt) const {
    auto it = std::lower_bound(applies_to.begin(), applies_to.end(), prompt);
    return it != applies_to.end() && *it == prompt ? &prompts[it - applies_to.begin()] : nullptr;
  }
  std::array<int64_t, 3> stride{};  // value strides over (position, head, element); 0: broadcast
  int vec = 0;                      // project / sae_clamp vector length
  std::vector<float> params;        // project: d̂; sae_clamp: w, u, b_dec
};

template <typename Fn>
void InterventionSet::ForEachAt(int prompt, HookId id, int pos, Fn&& fn) const {
  for (int i : by_prompt_[prompt]) {
    const Intervention& iv = list_[i];
    if (!(iv.hook == id)) continue;
    const Prepared& p = *prepared_[i];
    const Prepared::PerPrompt& pp = *p.For(prompt);
    const int j = pp.positions.IndexOf(pos);
    if (j >= 0) fn(iv, p, pp, j);
  }
}

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_INTERVENTIONS_INTERNAL_H_
