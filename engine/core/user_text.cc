#include "engine/core/user_text.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lensd {

std::string QuoteUserText(std::string_view s, size_t max_bytes) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max_bytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("\\x%02x", c);
    }
  }
  out += "'";
  if (s.size() > max_bytes) absl::StrAppend(&out, "... (", s.size(), " bytes)");
  return out;
}

}  // namespace lensd
