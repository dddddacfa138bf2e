#include "engine/runtime/interventions.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status.h"
#include "engine/runtime/interventions_internal.h"

namespace lensd {
namespace {

std::string DimsString(const std::vector<int64_t>& dims) {
  std::vector<std::string> parts;
  for (int64_t d : dims) parts.push_back(d < 0 ? "?" : absl::StrCat(d));
  return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
}

bool AllFinite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// How errors name intervention `index` of `list` (Intervention::name).
std::string NameOf(const std::vector<Intervention>& list, size_t index) {
  return list[index].name.empty() ? absl::StrCat("interventions[", index, "]") : list[index].name;
}

// Error context: the intervention's name and, per prompt, "prompts[p] (P tokens)".
struct Where {
  std::string name;
  bool generate;
  std::string Field(const char* field) const { return absl::StrCat(name, ".", field); }
  std::string Prompt(int p, int len) const {
    return generate ? absl::StrCat("the prompt (", len, " tokens)")
                    : absl::StrCat("prompts[", p, "] (", len, " tokens)");
  }
};

absl::Status Invalid(const std::string& what) { return absl::InvalidArgumentError(what); }

}  // namespace

const char* OpName(InterventionOp op) {
  switch (op) {
    case InterventionOp::kZero: return "zero";
    case InterventionOp::kScale: return "scale";
    case InterventionOp::kSet: return "set";
    case InterventionOp::kAdd: return "add";
    case InterventionOp::kPatch: return "patch";
    case InterventionOp::kProject: return "project";
    case InterventionOp::kSaeClamp: return "sae_clamp";
    case InterventionOp::kNoise: return "noise";
  }
  return "?";
}

int Selection::Count() const {
  if (listed) return static_cast<int>(list.size());
  return hi == kOpen ? -1 : hi - lo;
}

int Selection::IndexOf(int pos) const {
  if (!listed) return pos >= lo && pos < hi ? pos - lo : -1;
  for (size_t j = 0; j < list.size(); ++j) {
    if (list[j] == pos) return static_cast<int>(j);
  }
  return -1;
}

int Selection::PositionAt(int j) const { return listed ? list[j] : lo + j; }

absl::StatusOr<Selection> ResolvePositions(const PositionSelector& s, int len, int limit,
                                           bool generate, const std::string& field,
                                           const std::string& prompt) {
  using K = PositionSelector::Kind;
  Selection out;
  switch (s.kind) {
    case K::kAll:
      out.hi = generate ? Selection::kOpen : len;
      return out;
    case K::kPrompt:
      out.hi = len;
      return out;
    case K::kGenerated:
      if (!generate) return Invalid(absl::StrCat(field, " = \"generated\" applies to Generate only"));
      out.lo = len, out.hi = Selection::kOpen;
      return out;
    case K::kIndices: {
      if (s.indices.empty()) return Invalid(absl::StrCat(field, " is an empty list"));
      out.listed = true;
      std::set<int> seen;
      for (size_t k = 0; k < s.indices.size(); ++k) {
        const int pos = s.indices[k] < 0 ? len + s.indices[k] : s.indices[k];
        if (pos < 0 || pos >= limit) {
          return Invalid(absl::StrCat(field, "[", k, "] = ", s.indices[k], " is out of range for ",
                                      prompt));
        }
        if (!seen.insert(pos).second) {
          return Invalid(absl::StrCat(field, "[", k, "] repeats position ", pos));
        }
        out.list.push_back(pos);
      }
      return out;
    }
    case K::kSlice: {
      auto clamp = [&](std::optional<int> v, int fallback) {
        const int x = v ? (*v < 0 ? len + *v : *v) : fallback;
        return std::clamp(x, 0, len);
      };
      out.lo = clamp(s.start, 0), out.hi = clamp(s.stop, len);
      if (out.hi <= out.lo) return Invalid(absl::StrCat(field, " selects no position of ", prompt));
      return out;
    }
  }
  return out;
}

namespace {

// Checks the op's scalar fields and vectors; fills vec and params.
absl::Status PrepareOp(const Intervention& iv, const Where& w, InterventionSet::Prepared& p) {
  auto finite = [&](float v, const char* field) {
    return std::isfinite(v) ? absl::OkStatus()
                            : Invalid(absl::StrCat(w.Field(field), " must be finite"));
  };
  auto vector = [&](const FloatTensor& t, const char* field) -> absl::Status {
    if (t.shape.size() != 1 || t.data.empty()) {
      return Invalid(absl::StrCat(w.Field(field), " must be a non-empty vector, got shape ",
                                  DimsString(t.shape)));
    }
    if (!AllFinite(t.data)) return Invalid(absl::StrCat(w.Field(field), " has non-finite values"));
    return absl::OkStatus();
  };
  switch (iv.op) {
    case InterventionOp::kZero:
      return absl::OkStatus();
    case InterventionOp::kPatch:
      if (!w.generate) return absl::OkStatus();
      return Invalid(absl::StrCat(w.Field("op"), " = patch applies to RunWithCache only (its "
                                  "source is another prompt of the same request)"));
    case InterventionOp::kScale:
      return finite(iv.factor, "factor");
    case InterventionOp::kSet:
    case InterventionOp::kAdd:
      RETURN_IF_ERROR(finite(iv.coeff, "coeff"));
      if (iv.value.data.empty()) return Invalid(absl::StrCat(w.Field("value"), " is empty"));
      if (!AllFinite(iv.value.data)) {
        return Invalid(absl::StrCat(w.Field("value"), " has non-finite values"));
      }
      return absl::OkStatus();
    case InterventionOp::kNoise:
      if (!std::isfinite(iv.std) || iv.std < 0) {
        return Invalid(absl::StrCat(w.Field("std"), " must be finite and >= 0"));
      }
      return absl::OkStatus();
    case InterventionOp::kProject: {
      RETURN_IF_ERROR(finite(iv.target, "target"));
      RETURN_IF_ERROR(vector(iv.value, "direction"));
      double norm = 0;
      for (float x : iv.value.data) norm += double{x} * x;
      if (!(norm > 0) || !std::isfinite(norm)) {
        return Invalid(absl::StrCat(w.Field("direction"), " has zero norm"));
      }
      p.vec = static_cast<int>(iv.value.data.size());
      for (float x : iv.value.data) p.params.push_back(static_cast<float>(x / std::sqrt(norm)));
      return absl::OkStatus();
    }
    case InterventionOp::kSaeClamp: {
      for (auto [v, name] : {std::pair{iv.encoder_bias, "encoder_bias"},
                             std::pair{iv.threshold, "threshold"}, std::pair{iv.target, "target"}}) {
        RETURN_IF_ERROR(finite(v, name));
      }
      RETURN_IF_ERROR(vector(iv.value, "encoder"));
      RETURN_IF_ERROR(vector(iv.decoder, "decoder"));
      p.vec = static_cast<int>(iv.value.data.size());
      if (!iv.decoder_bias.data.empty()) RETURN_IF_ERROR(vector(iv.decoder_bias, "decoder_bias"));
      for (const FloatTensor* t : {&iv.decoder, &iv.decoder_bias}) {
        if (!t->data.empty() && static_cast<int>(t->data.size()) != p.vec) {
          return Invalid(absl::StrCat(w.Field("decoder"), " and decoder_bias must have the "
                                      "encoder's length ", p.vec));
        }
      }
      p.params = iv.value.data;
      p.params.insert(p.params.end(), iv.decoder.data.begin(), iv.decoder.data.end());
      p.params.resize(3 * static_cast<size_t>(p.vec), 0.0f);  // decoder_bias defaults to 0
      if (!iv.decoder_bias.data.empty()) {
        std::copy(iv.decoder_bias.data.begin(), iv.decoder_bias.data.end(),
                  p.params.begin() + 2 * p.vec);
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

// Heads and keys fit the hook; which prompts the intervention applies to.
absl::Status CheckAxes(const Intervention& iv, const Where& w, const Geometry& g, int n_prompts) {
  if (!iv.heads.empty()) {
    if (g.kind == Geometry::Kind::kVector) {
      return Invalid(absl::StrCat(w.Field("heads"), " applies to per-head hooks (attn.hook_q/k/v/"
                                  "rot_q/rot_k/z) and attention maps only"));
    }
    std::set<int> seen;
    for (size_t k = 0; k < iv.heads.size(); ++k) {
      if (iv.heads[k] < 0 || iv.heads[k] >= g.a) {
        return Invalid(absl::StrCat(w.Field("heads"), "[", k, "] = ", iv.heads[k],
                                    " is out of range: ", HookName(iv.hook), " has ", g.a, " heads"));
      }
      if (!seen.insert(iv.heads[k]).second) {
        return Invalid(absl::StrCat(w.Field("heads"), "[", k, "] repeats head ", iv.heads[k]));
      }
    }
  }
  if (iv.keys.kind != PositionSelector::Kind::kAll && g.kind != Geometry::Kind::kMap) {
    return Invalid(absl::StrCat(w.Field("keys"), " applies to attention maps (attn.hook_attn_"
                                "scores, attn.hook_pattern) only"));
  }
  if (g.kind == Geometry::Kind::kMap &&
      (iv.op == InterventionOp::kProject || iv.op == InterventionOp::kSaeClamp)) {
    return Invalid(absl::StrCat(w.Field("op"), " = ", OpName(iv.op), " acts on activation "
                                "vectors, not on attention maps"));
  }
  for (size_t k = 0; k < iv.prompts.size(); ++k) {
    if (iv.prompts[k] < 0 || iv.prompts[k] >= n_prompts) {
      return Invalid(absl::StrCat(w.Field("prompts"), "[", k, "] = ", iv.prompts[k],
                                  " is out of range: the request has ", n_prompts, " prompt(s)"));
    }
  }
  return absl::OkStatus();
}

// The slice of one prompt in its TransformerLens axis order (-1: unknown length).
std::vector<int64_t> SliceDims(const Geometry& g, const InterventionSet::Prepared::PerPrompt& pp,
                               int64_t heads) {
  const int64_t n = pp.positions.Count();
  switch (g.kind) {
    case Geometry::Kind::kVector: return {1, n, g.b};
    case Geometry::Kind::kHeads: return {1, n, heads, g.b};
    case Geometry::Kind::kMap: return {1, heads, n, pp.keys.Count()};
  }
  return {};
}

// Logical axes (position, head, element) of each slice axis; -1 for the batch axis.
std::vector<int> LogicalAxes(const Geometry& g) {
  switch (g.kind) {
    case Geometry::Kind::kVector: return {-1, 0, 2};
    case Geometry::Kind::kHeads: return {-1, 0, 1, 2};
    case Geometry::Kind::kMap: return {-1, 1, 0, 2};
  }
  return {};
}

// The value broadcasts to `slice`; records its strides per logical axis.
absl::Status CheckBroadcast(const Intervention& iv, const Where& w, const std::vector<int64_t>& slice,
                            const std::string& prompt, InterventionSet::Prepared& p) {
  const std::vector<int64_t>& vshape = iv.value.shape;
  auto fail = [&] {
    return Invalid(absl::StrCat(w.Field("value"), " of shape ", DimsString(vshape),
                                " does not broadcast to the selected slice ", DimsString(slice),
                                " of ", prompt, " (? = a length unknown before generation: ",
                                "use 1)"));
  };
  if (vshape.size() > slice.size()) return fail();
  const size_t pad = slice.size() - vshape.size();
  int64_t stride = 1;
  std::vector<int64_t> strides(slice.size(), 0);
  for (size_t k = slice.size(); k-- > pad;) {
    const int64_t vd = vshape[k - pad];
    if (vd != 1 && vd != slice[k]) return fail();
    strides[k] = vd == 1 ? 0 : stride;
    stride *= vd;
  }
  const std::vector<int> logical = LogicalAxes(p.geometry);
  for (size_t k = 0; k < slice.size(); ++k) {
    if (logical[k] >= 0) p.stride[logical[k]] = strides[k];
  }
  return absl::OkStatus();
}

// The vector length divides the slice per position: its last axis or all of it.
absl::Status CheckVector(const Where& w, const char* field, const std::vector<int64_t>& slice,
                         int vec, const std::string& prompt, const Geometry& g) {
  const int64_t last = slice.back(), whole = g.kind == Geometry::Kind::kHeads ? slice[2] * last : last;
  if (vec == last || vec == whole) return absl::OkStatus();
  return Invalid(absl::StrCat(w.Field(field), " has length ", vec, "; the slice ",
                              DimsString(slice), " of ", prompt, " takes vectors of ", last,
                              whole != last ? absl::StrCat(" or ", whole) : "", " elements"));
}

}  // namespace

namespace {

// Patch: the source prompt, its positions (and keys) one to one with the target's.
absl::Status PreparePatch(const Intervention& iv, const Where& w, const std::vector<int>& lens,
                          int target, InterventionSet::Prepared::PerPrompt& pp, bool map) {
  const int n = static_cast<int>(lens.size());
  if (iv.source < 0 || iv.source >= n) {
    return Invalid(absl::StrCat(w.Field("source"), " = ", iv.source, " is out of range: the "
                                "request has ", n, " prompt(s)"));
  }
  if (iv.source == target) {
    return Invalid(absl::StrCat(w.Field("source"), " = ", iv.source, " patches prompts[", target,
                                "] from itself"));
  }
  const int len = lens[iv.source];
  const std::string source = "source " + w.Prompt(iv.source, len);
  const char* field = iv.source_positions ? "source_positions" : "positions";
  ASSIGN_OR_RETURN(pp.source, ResolvePositions(iv.source_positions.value_or(iv.positions), len, len,
                                               false, w.Field(field), source));
  if (pp.source.Count() != pp.positions.Count()) {
    return Invalid(absl::StrCat(w.Field(field), " selects ", pp.source.Count(), " positions of ",
                                source, " but ", pp.positions.Count(), " of ",
                                w.Prompt(target, lens[target]), "; they map one to one"));
  }
  if (!map) return absl::OkStatus();
  ASSIGN_OR_RETURN(pp.source_keys,
                   ResolvePositions(iv.keys, len, len, false, w.Field("keys"), source));
  if (pp.source_keys.Count() != pp.keys.Count()) {
    return Invalid(absl::StrCat(w.Field("keys"), " selects ", pp.source_keys.Count(), " keys of ",
                                source, " but ", pp.keys.Count(), " of prompts[",
                                target, "]; patch maps of prompts of one length, or pick keys"));
  }
  return absl::OkStatus();
}

bool Contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

absl::Status PreparePrompts(const Intervention& iv, const Where& w, const std::vector<int>& lens,
                            int max_tokens, InterventionSet::Prepared& p) {
  const bool map = p.geometry.kind == Geometry::Kind::kMap;
  const bool patch = iv.op == InterventionOp::kPatch;
  const int64_t heads = iv.heads.empty() ? p.geometry.a : static_cast<int64_t>(iv.heads.size());
  for (int t = 0; t < static_cast<int>(lens.size()); ++t) {
    if (iv.prompts.empty() ? patch && t == iv.source : !Contains(iv.prompts, t)) continue;
    p.applies_to.push_back(t);
    auto& pp = p.prompts.emplace_back();
    const std::string prompt = w.Prompt(t, lens[t]);
    const int limit = w.generate ? max_tokens : lens[t];
    ASSIGN_OR_RETURN(pp.positions, ResolvePositions(iv.positions, lens[t], limit, w.generate,
                                                    w.Field("positions"), prompt));
    if (map) {
      ASSIGN_OR_RETURN(
          pp.keys, ResolvePositions(iv.keys, lens[t], limit, w.generate, w.Field("keys"), prompt));
    }
    const std::vector<int64_t> slice = SliceDims(p.geometry, pp, heads);
    if (iv.op == InterventionOp::kSet || iv.op == InterventionOp::kAdd) {
      RETURN_IF_ERROR(CheckBroadcast(iv, w, slice, prompt, p));
    }
    if (p.vec > 0) {
      const char* field = iv.op == InterventionOp::kProject ? "direction" : "encoder";
      RETURN_IF_ERROR(CheckVector(w, field, slice, p.vec, prompt, p.geometry));
    }
    if (patch) RETURN_IF_ERROR(PreparePatch(iv, w, lens, t, pp, map));
  }
  return absl::OkStatus();
}

// Patches at one hook must not form a cycle of prompts (edges target -> source): a depth-first
// search with the usual three colours per hook.
absl::Status CheckPatchCycles(const std::vector<Intervention>& list,
                              const std::vector<std::shared_ptr<InterventionSet::Prepared>>& prepared,
                              size_t n_prompts) {
  std::set<std::pair<int, int>> checked;  // hooks done, as (layer, point)
  for (size_t i = 0; i < list.size(); ++i) {
    const HookId hook = list[i].hook;
    if (list[i].op != InterventionOp::kPatch ||
        !checked.insert({hook.layer, static_cast<int>(hook.point)}).second) {
      continue;
    }
    std::vector<std::vector<std::pair<int, size_t>>> from(n_prompts);
    for (size_t k = 0; k < list.size(); ++k) {
      if (list[k].op != InterventionOp::kPatch || !(list[k].hook == hook)) continue;
      for (int t : prepared[k]->applies_to) from[t].push_back({list[k].source, k});
    }
    std::vector<int> colour(from.size(), 0);  // 0 new, 1 on the path, 2 finished
    std::vector<std::pair<int, size_t>> stack;  // (prompt, next edge)
    for (size_t start = 0; start < from.size(); ++start) {
      if (colour[start] != 0) continue;
      stack.push_back({static_cast<int>(start), 0}), colour[start] = 1;
      while (!stack.empty()) {
        auto& [at, next] = stack.back();
        if (next == from[at].size()) {
          colour[at] = 2, stack.pop_back();
          continue;
        }
        const auto [to, index] = from[at][next++];
        if (colour[to] == 1) {
          return Invalid(absl::StrCat(NameOf(list, index), ": patches at ", HookName(hook),
                                      " form a cycle through prompts[", to, "]"));
        }
        if (colour[to] == 0) stack.push_back({to, 0}), colour[to] = 1;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const InterventionSet>> InterventionSet::Create(
    const ModelConfig& c, std::vector<Intervention> list, const std::vector<int>& prompt_lengths,
    bool generate, int max_tokens) {
  std::shared_ptr<InterventionSet> set(new InterventionSet());
  set->n_layers_ = c.n_layers;
  set->touched_.assign(static_cast<size_t>(c.n_layers + 1) * kNumHookPoints, false);
  std::vector<std::shared_ptr<Prepared>> prepared;
  const std::vector<HookId> hooks = AllHooks(c);
  for (size_t i = 0; i < list.size(); ++i) {
    const Intervention& iv = list[i];
    const Where w{NameOf(list, i), generate};
    if (std::find(hooks.begin(), hooks.end(), iv.hook) == hooks.end()) {
      return Invalid(absl::StrCat(w.Field("hook"), ": this model has no ", HookName(iv.hook)));
    }
    if (IsCaptureOnly(iv.hook.point)) {
      return Invalid(absl::StrCat(w.Field("hook"), ": ", HookName(iv.hook),
                                  " can be captured but not intervened on"));
    }
    auto p = std::make_shared<Prepared>();
    p->geometry = GeometryOf(c, iv.hook.point);
    RETURN_IF_ERROR(PrepareOp(iv, w, *p));
    RETURN_IF_ERROR(CheckAxes(iv, w, p->geometry, static_cast<int>(prompt_lengths.size())));
    RETURN_IF_ERROR(PreparePrompts(iv, w, prompt_lengths, max_tokens, *p));
    set->touched_[(iv.hook.layer + 1) * kNumHookPoints + static_cast<int>(iv.hook.point)] = true;
    set->has_patch_ |= iv.op == InterventionOp::kPatch;
    prepared.push_back(std::move(p));
  }
  RETURN_IF_ERROR(CheckPatchCycles(list, prepared, prompt_lengths.size()));
  set->fingerprint_ = FingerprintOf(list);
  set->by_prompt_.resize(prompt_lengths.size());
  for (size_t i = 0; i < prepared.size(); ++i) {
    for (int t : prepared[i]->applies_to) set->by_prompt_[t].push_back(static_cast<int>(i));
  }
  set->prepared_.assign(prepared.begin(), prepared.end());
  set->list_ = std::move(list);
  return std::shared_ptr<const InterventionSet>(std::move(set));
}

int InterventionSet::FirstPosition(int prompt) const {
  int first = INT32_MAX;
  for (const auto& p : prepared_) {
    const Prepared::PerPrompt* pp = p->For(prompt);
    if (pp == nullptr) continue;
    const Selection& s = pp->positions;
    first = std::min(first, s.listed ? *std::min_element(s.list.begin(), s.list.end()) : s.lo);
  }
  return first;
}

bool InterventionSet::Touches(HookId id) const {
  if (id.layer < -1 || id.layer >= n_layers_) return false;
  return touched_[(id.layer + 1) * kNumHookPoints + static_cast<int>(id.point)];
}

absl::Status InterventionSet::CheckGradientRules() const {
  for (size_t i = 0; i < list_.size(); ++i) {
    const Intervention& iv = list_[i];
    const bool ruled =
        HasGradientRule(iv.hook.point) &&
        !(iv.hook.point == HookPoint::kUnembedOut && iv.op == InterventionOp::kSaeClamp);
    if (!ruled) {
      return absl::InvalidArgumentError(absl::StrCat(
          NameOf(list_, i), ": gradients cannot pass ", OpName(iv.op), " at ", HookName(iv.hook),
          "; they pass interventions at residual, attention head (q, k, v, z), MLP and unembed "
          "hooks (no sae_clamp on the logits), not at norm statistics, attention maps or expert "
          "routing"));
    }
  }
  return absl::OkStatus();
}

std::array<int, kNumInterventionOps> InterventionSet::OpCounts() const {
  std::array<int, kNumInterventionOps> counts{};
  for (const Intervention& iv : list_) ++counts[static_cast<int>(iv.op)];
  return counts;
}

}  // namespace lensd
