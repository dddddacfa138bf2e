// Command-line flags shared by lensd and lensctl: `--flag value` and `--flag=value`, each
// command declaring the flags it accepts so a typo is an error, not a silent default.
#ifndef LENSD_CLI_FLAGS_H_
#define LENSD_CLI_FLAGS_H_

#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lensd {

// One flag of a command: what parses it and what --help prints, from the same entry.
struct FlagSpec {
  std::string name;           // without dashes
  std::string default_value;  // what Get* return when it is absent ("": the caller's fallback)
  std::string help;           // one line; says what an empty default means
  bool boolean = false;       // takes no value (--flag, or --flag=true|false)
};
using FlagTable = std::vector<FlagSpec>;

// The tables' flags in order, a name given twice kept once (the first).
FlagTable Concat(std::initializer_list<FlagTable> tables);
// "--help" or "-h" among `args`.
bool WantsHelp(const std::vector<std::string>& args);
// `usage`, then one line per flag: "  --name VALUE   help (default: D)".
std::string HelpText(std::string_view usage, const FlagTable& table);

class Flags {
 public:
  // Accepts exactly the table's flags; absent ones read as their table defaults.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args, const FlagTable& table);
  // `known` lists accepted names without dashes; `booleans` those that take no value.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                     const std::set<std::string>& known,
                                     const std::set<std::string>& booleans = {});
  // Given on the command line (defaults do not count).
  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  // The value given, else the table's default, else `fallback`; likewise the typed getters.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  absl::StatusOr<int> GetInt(const std::string& name, int fallback = 0) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback = 0) const;
  // "1,2,3" -> {1,2,3}; empty when absent.
  absl::StatusOr<std::vector<int>> GetIntList(const std::string& name) const;
  // "a,b" -> {"a","b"}.
  std::vector<std::string> GetList(const std::string& name) const;
  // Every occurrence of the flags in `names`, in command-line order, as (name, value); Get
  // and the others see the last occurrence of a repeated flag.
  std::vector<std::pair<std::string, std::string>> Occurrences(
      const std::set<std::string>& names) const;

 private:
  // The given value, else a non-empty table default; nullptr when neither.
  const std::string* Value(const std::string& name) const;

  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> defaults_;
  std::vector<std::pair<std::string, std::string>> ordered_;
};

// "1,2 3" -> {1, 2, 3}; the error names --`name`.
absl::StatusOr<std::vector<int>> ParseIntList(const std::string& name, const std::string& value);

}  // namespace lensd

#endif  // LENSD_CLI_FLAGS_H_
