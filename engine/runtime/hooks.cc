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

constexpr int kSubs = kNumAttachedHooks + 1;  // the point itself, then its attached hooks

size_t BitOf(HookId id) {
  return (static_cast<size_t>(id.layer + 1) * kNumHookPoints + static_cast<size_t>(id.point)) *
             kSubs +
         static_cast<size_t>(id.sub + 1);
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
  s.bits_.assign(static_cast<size_t>(c.n_layers + 1) * kNumHookPoints * kSubs, false);
  return s;
}

void HookSelection::Add(HookId id) {
  hooks_.push_back(id);
  bits_[BitOf(id)] = true;
}

HookSelection HookSelection::All(const ModelConfig& c, const std::vector<HookId>& sites) {
  HookSelection s = None(c);
  for (HookId id : AllHooks(c, sites)) s.Add(id);
  return s;
}

absl::StatusOr<HookSelection> HookSelection::Parse(const ModelConfig& c,
                                                   const std::vector<std::string>& patterns,
                                                   const std::vector<HookId>& sites) {
  const std::vector<HookId> all = AllHooks(c, sites);
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
    if (chosen[i]) s.Add(all[i]);
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
  if (id.layer < -1 || id.layer >= n_layers_ || id.sub < -1 || id.sub >= kNumAttachedHooks) {
    return false;
  }
  return bits_[BitOf(id)];
}

bool HookSelection::HasAttentionMaps() const {
  for (const HookId& id : hooks_) {
    if (IsAttentionMap(id.point)) return true;
  }
  return false;
}

}  // namespace lensd
