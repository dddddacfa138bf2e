#include "cli/flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/core/status.h"

namespace lensd {

absl::StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args,
                                   const std::set<std::string>& known,
                                   const std::set<std::string>& booleans) {
  Flags f;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
    }
    std::string name = a.substr(2), value;
    size_t eq = name.find('=');
    bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (known.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (accepted: --",
                                                     absl::StrJoin(known, ", --"), ")"));
    }
    if (booleans.count(name) != 0) {
      value = inline_value ? value : "true";
    } else if (!inline_value) {
      if (i + 1 >= args.size())
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = args[++i];
    }
    f.values_[name] = value;
    f.ordered_.emplace_back(name, value);
  }
  return f;
}

absl::StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args, const FlagTable& table) {
  std::set<std::string> known, booleans;
  for (const FlagSpec& f : table) {
    known.insert(f.name);
    if (f.boolean) booleans.insert(f.name);
  }
  ASSIGN_OR_RETURN(Flags flags, Parse(args, known, booleans));
  for (const FlagSpec& f : table) {
    if (!f.default_value.empty()) flags.defaults_.emplace(f.name, f.default_value);
  }
  return flags;
}

const std::string* Flags::Value(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end()) return &it->second;
  it = defaults_.find(name);
  return it == defaults_.end() ? nullptr : &it->second;
}

std::string Flags::Get(const std::string& name, const std::string& fallback) const {
  const std::string* v = Value(name);
  return v == nullptr ? fallback : *v;
}

absl::StatusOr<int> Flags::GetInt(const std::string& name, int fallback) const {
  const std::string* s = Value(name);
  if (s == nullptr) return fallback;
  int v;
  if (!absl::SimpleAtoi(*s, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be an integer, got '", *s, "'"));
  }
  return v;
}

absl::StatusOr<double> Flags::GetDouble(const std::string& name, double fallback) const {
  const std::string* s = Value(name);
  if (s == nullptr) return fallback;
  double v;
  if (!absl::SimpleAtod(*s, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number, got '", *s, "'"));
  }
  return v;
}

absl::StatusOr<std::vector<int>> Flags::GetIntList(const std::string& name) const {
  const std::string* s = Value(name);
  if (s == nullptr) return std::vector<int>{};
  return ParseIntList(name, *s);
}

FlagTable Concat(std::initializer_list<FlagTable> tables) {
  FlagTable out;
  std::set<std::string> seen;
  for (const FlagTable& t : tables) {
    for (const FlagSpec& f : t) {
      if (seen.insert(f.name).second) out.push_back(f);
    }
  }
  return out;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

std::string HelpText(std::string_view usage, const FlagTable& table) {
  std::string out(usage);
  out += "\nflags:\n";
  for (const FlagSpec& f : table) {
    std::string left = absl::StrCat("  --", f.name, f.boolean ? "" : " VALUE");
    if (left.size() < 30) left.resize(30, ' ');
    absl::StrAppend(
        &out, left, " ", f.help,
        f.default_value.empty() ? "" : absl::StrCat(" (default: ", f.default_value, ")"), "\n");
  }
  return out;
}

absl::StatusOr<std::vector<int>> ParseIntList(const std::string& name, const std::string& value) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(value, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": '", part, "' is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> Flags::Occurrences(
    const std::set<std::string>& names) const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& entry : ordered_) {
    if (names.count(entry.first) != 0) out.push_back(entry);
  }
  return out;
}

std::vector<std::string> Flags::GetList(const std::string& name) const {
  const std::string* s = Value(name);
  if (s == nullptr) return {};
  return absl::StrSplit(*s, ',', absl::SkipEmpty());
}

}  // namespace lensd
