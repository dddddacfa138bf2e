#include "server/cli_flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

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
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = args[++i];
    }
    f.values_[name] = value;
    f.ordered_.emplace_back(name, value);
  }
  return f;
}

std::string Flags::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<int> Flags::GetInt(const std::string& name, int fallback) const {
  if (!Has(name)) return fallback;
  int v;
  if (!absl::SimpleAtoi(Get(name), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer, got '", Get(name), "'"));
  }
  return v;
}

absl::StatusOr<double> Flags::GetDouble(const std::string& name, double fallback) const {
  if (!Has(name)) return fallback;
  double v;
  if (!absl::SimpleAtod(Get(name), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a number, got '", Get(name), "'"));
  }
  return v;
}

absl::StatusOr<std::vector<int>> Flags::GetIntList(const std::string& name) const {
  if (!Has(name)) return std::vector<int>{};
  return ParseIntList(name, Get(name));
}

absl::StatusOr<std::vector<int>> ParseIntList(const std::string& name, const std::string& value) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(value, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", part, "' is not an integer"));
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
  if (!Has(name)) return {};
  return absl::StrSplit(Get(name), ',', absl::SkipEmpty());
}

}  // namespace lensd
