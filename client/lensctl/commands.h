// lensctl subcommands: remote twins of `lensd generate` / `lensd run` plus info, tokenize and
// health. Each writes exactly what its lensd counterpart writes.
#ifndef LENSD_CLIENT_LENSCTL_COMMANDS_H_
#define LENSD_CLIENT_LENSCTL_COMMANDS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/flags.h"

namespace lensd {

struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::string auth_token;  // sent as "authorization: Bearer <token>" when set
  int timeout_s = 0;       // per call; 0 = none
  std::unique_ptr<grpc::ClientContext> NewContext() const;
};

absl::Status GenerateRemote(const Connection& c, const Flags& flags, std::ostream& out);
absl::Status CacheRemote(const Connection& c, const Flags& flags, std::ostream& out);
absl::Status InfoRemote(const Connection& c, const Flags& flags, std::ostream& out);
absl::Status TokenizeRemote(const Connection& c, const Flags& flags, std::ostream& out);
absl::Status HealthRemote(const Connection& c, const Flags& flags, std::ostream& out);
absl::Status SweepRemote(const Connection& c, const Flags& flags, std::ostream& out);

}  // namespace lensd

#endif  // LENSD_CLIENT_LENSCTL_COMMANDS_H_
