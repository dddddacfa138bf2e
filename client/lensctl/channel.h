// lensctl's channel: one address, a gRPC URI (dns:///name:port balances over every address
// of the name) or several comma-separated host:port addresses, with the service config the
// Python client uses too (round robin over healthy servers, retries of idempotent RPCs).
#ifndef LENSD_CLIENT_LENSCTL_CHANNEL_H_
#define LENSD_CLIENT_LENSCTL_CHANNEL_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace lensd {

// `addr` itself, or for several addresses one ipv4:/ipv6: target (host names resolved now).
absl::StatusOr<std::string> ChannelTarget(const std::string& addr);

// With `health_checked`, targets of several servers (several addresses, dns:) skip servers
// whose health is not SERVING (loading or draining); `lensctl health` asks without it.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           std::shared_ptr<grpc::ChannelCredentials> credentials,
                                           bool health_checked);

}  // namespace lensd

#endif  // LENSD_CLIENT_LENSCTL_CHANNEL_H_
