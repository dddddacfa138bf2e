#include "engine/model/json_fields.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace lensd {

bool JsonHas(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return false;
  auto it = j.find(key);
  return it != j.end() && !it->is_null();
}

absl::StatusOr<int64_t> JsonInt(const nlohmann::json& j, const char* key, int64_t fallback) {
  if (!JsonHas(j, key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_float() && v.get<double>() == static_cast<int64_t>(v.get<double>())) {
    return static_cast<int64_t>(v.get<double>());
  }
  return absl::InvalidArgumentError(absl::StrCat("field '", key, "' must be an integer"));
}

absl::StatusOr<double> JsonDouble(const nlohmann::json& j, const char* key, double fallback) {
  if (!JsonHas(j, key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_number()) return v.get<double>();
  return absl::InvalidArgumentError(absl::StrCat("field '", key, "' must be a number"));
}

absl::StatusOr<bool> JsonBool(const nlohmann::json& j, const char* key, bool fallback) {
  if (!JsonHas(j, key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_boolean()) return v.get<bool>();
  return absl::InvalidArgumentError(absl::StrCat("field '", key, "' must be true or false"));
}

absl::StatusOr<std::string> JsonString(const nlohmann::json& j, const char* key,
                                       const std::string& fallback) {
  if (!JsonHas(j, key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_string()) return v.get<std::string>();
  return absl::InvalidArgumentError(absl::StrCat("field '", key, "' must be a string"));
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}

}  // namespace lensd
