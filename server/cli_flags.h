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

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace lensd

#endif  // LENSD_SERVER_CLI_FLAGS_H_
