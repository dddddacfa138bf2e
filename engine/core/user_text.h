// User-supplied text inside error messages and logs. A network service echoes names and
// values back to say what was wrong; echoing them whole lets one request produce megabytes of
// status message (past clients' 8 KiB metadata limit) or of log.
#ifndef LENSD_ENGINE_CORE_USER_TEXT_H_
#define LENSD_ENGINE_CORE_USER_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace lensd {

inline constexpr size_t kMaxQuotedBytes = 100;

// 's' in single quotes: at most `max_bytes` of it (then "... (N bytes)"), bytes outside
// printable ASCII written as \xHH, so the result is short, printable and valid UTF-8.
std::string QuoteUserText(std::string_view s, size_t max_bytes = kMaxQuotedBytes);

}  // namespace lensd

#endif  // LENSD_ENGINE_CORE_USER_TEXT_H_
