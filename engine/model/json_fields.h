// Typed, non-throwing field access on nlohmann::json, for files that users hand us.
#ifndef LENSD_ENGINE_MODEL_JSON_FIELDS_H_
#define LENSD_ENGINE_MODEL_JSON_FIELDS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lensd {

// Parses a file that a user handed us. Documents nested deeper than `max_depth` arrays or
// objects are refused before parsing (nlohmann::json copies and destroys trees recursively,
// and so do walkers of them: a crafted file would overflow the stack); no real model file
// nests past a dozen levels. Errors say "not valid JSON at line L, column C: ..." or "nested
// deeper than N levels".
inline constexpr int kMaxJsonDepth = 64;
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, int max_depth = kMaxJsonDepth);

// Why `text` is not JSON: "not valid JSON at line L, column C: <what the parser expected>".
std::string WhyNotJson(std::string_view text);

// Absent or null gives `fallback`; a present value of the wrong type is an error.
// Integers must lie in [lo, hi] (checked before any narrowing; also for `fallback`) and may be
// written as a float with an integral value (1e3); the error names the field and the range.
absl::StatusOr<int> JsonInt(const nlohmann::json& j, const char* key, int64_t fallback,
                            int64_t lo = INT32_MIN, int64_t hi = INT32_MAX);
absl::StatusOr<double> JsonDouble(const nlohmann::json& j, const char* key, double fallback);
absl::StatusOr<bool> JsonBool(const nlohmann::json& j, const char* key, bool fallback);
absl::StatusOr<std::string> JsonString(const nlohmann::json& j, const char* key,
                                       const std::string& fallback);
// Present and non-null.
bool JsonHas(const nlohmann::json& j, const char* key);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_JSON_FIELDS_H_
