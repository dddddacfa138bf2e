// Typed, non-throwing field access on nlohmann::json, for files that users hand us.
#ifndef LENSD_ENGINE_MODEL_JSON_FIELDS_H_
#define LENSD_ENGINE_MODEL_JSON_FIELDS_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lensd {

// Absent or null gives `fallback`; a present value of the wrong type is an error.
absl::StatusOr<int64_t> JsonInt(const nlohmann::json& j, const char* key, int64_t fallback);
absl::StatusOr<double> JsonDouble(const nlohmann::json& j, const char* key, double fallback);
absl::StatusOr<bool> JsonBool(const nlohmann::json& j, const char* key, bool fallback);
absl::StatusOr<std::string> JsonString(const nlohmann::json& j, const char* key,
                                       const std::string& fallback);
// Present and non-null.
bool JsonHas(const nlohmann::json& j, const char* key);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_JSON_FIELDS_H_
