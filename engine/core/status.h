// Status propagation macros. Debian's abseil 20220623 ships absl::Status but not
// abseil's own RETURN_IF_ERROR / ASSIGN_OR_RETURN, so the project defines them once here.
#ifndef LENSD_ENGINE_CORE_STATUS_H_
#define LENSD_ENGINE_CORE_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LENSD_CONCAT_INNER_(a, b) a##b
#define LENSD_CONCAT_(a, b) LENSD_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status lensd_status_ = (expr);     \
    if (!lensd_status_.ok()) return lensd_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` declares x from a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  LENSD_ASSIGN_OR_RETURN_IMPL_(LENSD_CONCAT_(lensd_statusor_, __LINE__), lhs, expr)
#define LENSD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#endif  // LENSD_ENGINE_CORE_STATUS_H_
