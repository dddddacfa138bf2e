// `lensd serve`: loads the model once and serves lensd.v1 over gRPC until SIGTERM/SIGINT,
// then drains (accepted requests finish, new ones get UNAVAILABLE) and exits.
#ifndef LENSD_SERVER_SERVE_COMMAND_H_
#define LENSD_SERVER_SERVE_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/flags.h"

namespace lensd {

absl::Status ServeCommand(const std::vector<std::string>& args);
// Every flag `lensd serve` takes (the model's and the server's).
FlagTable ServeFlags();

}  // namespace lensd

#endif  // LENSD_SERVER_SERVE_COMMAND_H_
