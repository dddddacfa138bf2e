// Command-line flags shared by lensd and lensctl: `--flag value` and `--flag=value`, each
// command declaring the flags it accepts so a typo is an error, not a silent default.
#ifndef LENSD_SERVER_CLI_FLAGS_H_
#define LENSD_SERVER_CLI_FLAGS_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lensd {

class Flags {
 public:
  // `known` lists accepted names without dashes; `booleans` those that take no value.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                     const std::set<std::string>& known,
                                     const std::set<std::string>& booleans = {});
  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  absl::StatusOr<int> GetInt(const std::string& name, int fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
  // "1,2,3" -> {1,2,3}; empty when absent.
  absl::StatusOr<std::vector<int>> GetIntList(const std::string& name) const;
  // "a,b" -> {"a","b"}.
  std::vector<std::string> GetList(const std::string& name) const;
  // Every occurrence of the flags in `names`, in command-line order, as (name, value); Get
  // and the others see the last occurrence of a repeated flag.
  std::vector<std::pair<std::string, std::string>> Occurrences(
      const std::set<std::string>& names) const;

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::pair<std::string, std::string>> ordered_;
};

// "1,2 3" -> {1, 2, 3}; the error names --`name`.
absl::StatusOr<std::vector<int>> ParseIntList(const std::string& name, const std::string& value);

}  // namespace lensd

#endif  // LENSD_SERVER_CLI_FLAGS_H_
