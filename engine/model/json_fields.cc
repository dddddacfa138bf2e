#include "engine/model/json_fields.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace lensd {

namespace {

// A SAX consumer that keeps nothing but where parsing failed (nlohmann reports it there
// without exceptions).
class ErrorPosition final : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t byte, const std::string&,
                   const nlohmann::detail::exception& e) override {
    byte_ = byte, what_ = e.what();
    return false;
  }
  size_t byte() const { return byte_; }
  const std::string& what() const { return what_; }

 private:
  size_t byte_ = 0;
  std::string what_;
};

}  // namespace

std::string WhyNotJson(std::string_view text) {
  ErrorPosition sax;
  nlohmann::json::sax_parse(text.begin(), text.end(), &sax);
  // 1-based line and column of the byte where parsing stopped.
  const size_t at = std::min(sax.byte() > 0 ? sax.byte() - 1 : 0, text.size());
  const size_t line_start = text.rfind('\n', at == 0 ? 0 : at - 1);
  const size_t line = 1 + std::count(text.begin(), text.begin() + at, '\n');
  const size_t column = line_start == std::string_view::npos || at == 0 ? at + 1 : at - line_start;
  // nlohmann's text, less its "[json.exception.parse_error.N] parse error at ...: " prefix.
  std::string detail = sax.what();
  const size_t colon = detail.find(": ");
  if (colon != std::string::npos) detail = detail.substr(colon + 2);
  return absl::StrCat("not valid JSON at line ", line, ", column ", column, ": ", detail);
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return absl::InvalidArgumentError(
            absl::StrCat("nested deeper than ", max_depth, " levels (byte ", i, ")"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(WhyNotJson(text));
  return j;
}

bool JsonHas(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return false;
  auto it = j.find(key);
  return it != j.end() && !it->is_null();
}

absl::StatusOr<int> JsonInt(const nlohmann::json& j, const char* key, int64_t fallback,
                            int64_t lo, int64_t hi) {
  auto outside = [&](auto value) {
    return absl::InvalidArgumentError(
        absl::StrCat("field '", key, "' = ", value, " is outside [", lo, ", ", hi, "]"));
  };
  int64_t value = fallback;
  if (JsonHas(j, key)) {
    const auto& v = j.at(key);
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (hi < 0 || u > static_cast<uint64_t>(hi)) return outside(u);
      value = static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
      value = v.get<int64_t>();
    } else if (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>()) {
      // Compared as a double before converting: casting 1e300 to an integer is undefined.
      const double d = v.get<double>();
      if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) return outside(d);
      value = static_cast<int64_t>(d);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("field '", key, "' must be an integer"));
    }
  }
  if (value < lo || value > hi) return outside(value);
  return static_cast<int>(value);
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
