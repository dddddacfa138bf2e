#include "engine/runtime/hooks.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/core/user_text.h"

namespace lensd {
namespace {

std::string_view PointSuffix(HookPoint p) {
  switch (p) {
    case HookPoint::kEmbed: return "hook_embed";
    case HookPoint::kPosEmbed: return "hook_pos_embed";
    case HookPoint::kLnFinalScale: return "ln_final.hook_scale";
    case HookPoint::kLnFinalNormalized: return "ln_final.hook_normalized";
    case HookPoint::kUnembedIn: return "unembed.hook_in";
    case HookPoint::kUnembedOut: return "unembed.hook_out";
    case HookPoint::kResidPre: return "hook_resid_pre";
    case HookPoint::kLn1Scale: return "ln1.hook_scale";
    case HookPoint::kLn1Normalized: return "ln1.hook_normalized";
    case HookPoint::kQ: return "attn.hook_q";
    case HookPoint::kK: return "attn.hook_k";
    case HookPoint::kV: return "attn.hook_v";
    case HookPoint::kRotQ: return "attn.hook_rot_q";
    case HookPoint::kRotK: return "attn.hook_rot_k";
    case HookPoint::kAttnScores: return "attn.hook_attn_scores";
    case HookPoint::kPattern: return "attn.hook_pattern";
    case HookPoint::kZ: return "attn.hook_z";
    case HookPoint::kAttnOut: return "hook_attn_out";
    case HookPoint::kResidMid: return "hook_resid_mid";
    case HookPoint::kLn2Scale: return "ln2.hook_scale";
    case HookPoint::kLn2Normalized: return "ln2.hook_normalized";
    case HookPoint::kMlpPre: return "mlp.hook_pre";
    case HookPoint::kMlpPreLinear: return "mlp.hook_pre_linear";
    case HookPoint::kMlpPost: return "mlp.hook_post";
    case HookPoint::kMlpOut: return "hook_mlp_out";
    case HookPoint::kResidPost: return "hook_resid_post";
  }
  return "?";
}

bool Exists(const ModelConfig& c, HookPoint p) {
  switch (p) {
    case HookPoint::kPosEmbed: return c.learned_positions;
    case HookPoint::kRotQ:
    case HookPoint::kRotK: return !c.learned_positions;
    case HookPoint::kResidMid: return !c.parallel_residual;
    case HookPoint::kMlpPreLinear: return c.gated_mlp;
    default: return true;
  }
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// `*` (any run) and `?` (one byte), greedy with one backtrack point: O(|p|·|s|) at worst,
// where fnmatch backtracks exponentially on patterns such as "*a*a*a*a*a*b".
bool GlobMatch(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++pi, ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

bool IsWildcard(std::string_view pattern) {
  return pattern.find_first_of("*?") != std::string_view::npos;
}

// "blocks.2-5.rest" -> matches blocks L.rest for L in [2,5]; false if not a range pattern.
bool MatchRange(absl::string_view pattern, const std::string& name, bool& is_range) {
  is_range = false;
  std::vector<absl::string_view> pp = absl::StrSplit(pattern, absl::MaxSplits('.', 2));
  if (pp.size() < 3 || pp[0] != "blocks") return false;
  std::vector<absl::string_view> range = absl::StrSplit(pp[1], '-');
  int lo, hi;
  if (range.size() != 2 || !absl::SimpleAtoi(range[0], &lo) || !absl::SimpleAtoi(range[1], &hi)) {
    return false;
  }
  is_range = true;
  std::vector<absl::string_view> np = absl::StrSplit(name, absl::MaxSplits('.', 2));
  int layer;
  if (np.size() < 3 || np[0] != "blocks" || !absl::SimpleAtoi(np[1], &layer)) return false;
  return layer >= lo && layer <= hi &&
         GlobMatch({pp[2].data(), pp[2].size()}, {np[2].data(), np[2].size()});
}

}  // namespace

bool IsBlockHook(HookPoint p) { return static_cast<int>(p) >= static_cast<int>(HookPoint::kResidPre); }

std::string HookName(HookId id) {
  if (!IsBlockHook(id.point)) return std::string(PointSuffix(id.point));
  return absl::StrCat("blocks.", id.layer, ".", std::string(PointSuffix(id.point)));
}

std::vector<HookId> AllHooks(const ModelConfig& c) {
  std::vector<HookId> out;
  for (HookPoint p : {HookPoint::kEmbed, HookPoint::kPosEmbed}) {
    if (Exists(c, p)) out.push_back({p, -1});
  }
  for (int l = 0; l < c.n_layers; ++l) {
    for (int i = static_cast<int>(HookPoint::kResidPre); i < kNumHookPoints; ++i) {
      auto p = static_cast<HookPoint>(i);
      if (Exists(c, p)) out.push_back({p, l});
    }
  }
  for (HookPoint p : {HookPoint::kLnFinalScale, HookPoint::kLnFinalNormalized,
                      HookPoint::kUnembedIn, HookPoint::kUnembedOut}) {
    out.push_back({p, -1});
  }
  return out;
}

Shape HookShape(const ModelConfig& c, HookPoint point, int64_t p) {
  switch (point) {
    case HookPoint::kLnFinalScale:
    case HookPoint::kLn1Scale:
    case HookPoint::kLn2Scale:
      return {1, p, 1};
    case HookPoint::kUnembedOut:
      return {1, p, c.vocab_size};
    case HookPoint::kQ:
    case HookPoint::kRotQ:
    case HookPoint::kZ:
      return {1, p, c.n_heads, c.d_head};
    case HookPoint::kK:
    case HookPoint::kV:
    case HookPoint::kRotK:
      return {1, p, c.n_kv_heads, c.d_head};
    case HookPoint::kAttnScores:
    case HookPoint::kPattern:
      return {1, c.n_heads, p, p};
    case HookPoint::kMlpPre:
    case HookPoint::kMlpPreLinear:
    case HookPoint::kMlpPost:
      return {1, p, c.d_mlp};
    default:
      return {1, p, c.d_model};
  }
}

std::string HookShapeFormula(const ModelConfig& c, HookPoint point) {
  Shape s = HookShape(c, point, -1);
  std::vector<std::string> dims;
  for (int i = 0; i < s.rank; ++i) dims.push_back(s[i] == -1 ? "P" : absl::StrCat(s[i]));
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

std::vector<std::string> ClosestNames(std::string_view name, const std::vector<std::string>& names,
                                      size_t count) {
  // Hook names are short: beyond this many bytes a typo is not a typo, and the quadratic
  // distance would cost milliseconds per name.
  name = name.substr(0, 64);
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& n : names) scored.emplace_back(EditDistance(name, n), n);
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < count; ++i) out.push_back(scored[i].second);
  return out;
}

HookSelection HookSelection::None(const ModelConfig& c) {
  HookSelection s;
  s.n_layers_ = c.n_layers;
  s.bits_.assign(static_cast<size_t>(c.n_layers + 1) * kNumHookPoints, false);
  return s;
}

HookSelection HookSelection::All(const ModelConfig& c) {
  HookSelection s = None(c);
  for (HookId id : AllHooks(c)) {
    s.hooks_.push_back(id);
    s.bits_[(id.layer + 1) * kNumHookPoints + static_cast<int>(id.point)] = true;
  }
  return s;
}

absl::StatusOr<HookSelection> HookSelection::Parse(const ModelConfig& c,
                                                   const std::vector<std::string>& patterns) {
  const std::vector<HookId> all = AllHooks(c);
  std::vector<std::string> names;
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t i = 0; i < all.size(); ++i) {
    names.push_back(HookName(all[i]));
    index.emplace(names.back(), i);
  }
  if (patterns.size() > kMaxHookPatterns) {
    return absl::InvalidArgumentError(absl::StrCat(patterns.size(), " patterns; at most ",
                                                   kMaxHookPatterns));
  }
  std::vector<bool> chosen(all.size(), false);
  size_t scans = 0;
  for (size_t p = 0; p < patterns.size(); ++p) {
    const std::string& pattern = patterns[p];
    if (pattern.empty()) continue;
    if (pattern.size() > kMaxHookNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat("pattern [", p, "] is ", pattern.size(),
                                                     " bytes; hook patterns are at most ",
                                                     kMaxHookNameBytes));
    }
    bool any = false;
    if (auto it = index.find(pattern); it != index.end()) {
      chosen[it->second] = any = true;
    } else if (IsWildcard(pattern) || pattern.find('-') != std::string::npos) {
      if (++scans > kMaxHookGlobs) {
        return absl::InvalidArgumentError(absl::StrCat(
            "more than ", kMaxHookGlobs, " glob or range patterns; list exact names instead"));
      }
      for (size_t i = 0; i < all.size(); ++i) {
        bool is_range;
        bool hit = MatchRange(pattern, names[i], is_range);
        if (!is_range) hit = GlobMatch(pattern, names[i]);
        if (hit) chosen[i] = any = true;
      }
    }
    if (!any) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown hook ", QuoteUserText(pattern), "; closest valid names: ",
                       absl::StrJoin(ClosestNames(pattern, names, 3), ", ")));
    }
  }
  HookSelection s = None(c);
  for (size_t i = 0; i < all.size(); ++i) {
    if (!chosen[i]) continue;
    s.hooks_.push_back(all[i]);
    s.bits_[(all[i].layer + 1) * kNumHookPoints + static_cast<int>(all[i].point)] = true;
  }
  return s;
}

absl::StatusOr<HookId> HookFromName(const ModelConfig& c, std::string_view name) {
  std::vector<std::string> names;
  for (HookId id : AllHooks(c)) {
    names.push_back(HookName(id));
    if (names.back() == name) return id;
  }
  // A TransformerLens name this architecture lacks (hook_resid_mid of a parallel-residual
  // model, hook_pos_embed of a rotary one) deserves a plainer answer than a typo does.
  for (int p = 0; p < kNumHookPoints; ++p) {
    for (int layer = IsBlockHook(HookPoint(p)) ? 0 : -1;
         layer < (IsBlockHook(HookPoint(p)) ? c.n_layers : 0); ++layer) {
      if (HookName({HookPoint(p), layer}) == name) {
        return absl::InvalidArgumentError(absl::StrCat(
            "this model (", c.model_type, ") has no ", std::string(name)));
      }
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown hook ", QuoteUserText(name),
                                                 "; closest valid names: ",
                                                 absl::StrJoin(ClosestNames(name, names, 3), ", ")));
}

bool HookSelection::Contains(HookId id) const {
  if (id.layer < -1 || id.layer >= n_layers_) return false;
  return bits_[(id.layer + 1) * kNumHookPoints + static_cast<int>(id.point)];
}

bool HookSelection::HasAttentionMaps() const {
  for (const HookId& id : hooks_) {
    if (id.point == HookPoint::kAttnScores || id.point == HookPoint::kPattern) return true;
  }
  return false;
}

}  // namespace lensd
