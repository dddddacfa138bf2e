#include "client/lensctl/channel.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace lensd {
namespace {

constexpr char kServiceConfig[] =
#include "lensd/v1/service_config.inc"
    ;

// "host:port" -> (4 or 6, "a.b.c.d:port" or "[v6]:port"), the host resolved if it is a name.
absl::StatusOr<std::pair<int, std::string>> Resolve(absl::string_view addr) {
  const size_t colon = addr.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(addr.substr(colon + 1), &port) ||
      addr.find('/') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--addr '", std::string(addr), "': several addresses must each be host:port"));
  }
  std::string host(addr.substr(0, colon));
  host = std::string(absl::StripSuffix(absl::StripPrefix(host, "["), "]"));
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("--addr: cannot resolve '", host, "'"));
  }
  char text[INET6_ADDRSTRLEN] = {};
  const bool v6 = found->ai_family == AF_INET6;
  const void* ip = v6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr)
                      : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr);
  inet_ntop(found->ai_family, ip, text, sizeof(text));
  freeaddrinfo(found);
  return std::make_pair(v6 ? 6 : 4, v6 ? absl::StrCat("[", text, "]:", port) : absl::StrCat(text, ":", port));
}

}  // namespace

absl::StatusOr<std::string> ChannelTarget(const std::string& addr) {
  std::vector<absl::string_view> parts = absl::StrSplit(addr, ',', absl::SkipWhitespace());
  if (parts.size() <= 1) return addr;
  std::vector<std::string> resolved;
  int version = 0;
  for (absl::string_view part : parts) {
    auto r = Resolve(absl::StripAsciiWhitespace(part));
    if (!r.ok()) return r.status();
    if (version != 0 && r->first != version) {
      return absl::InvalidArgumentError(absl::StrCat("--addr '", addr, "' mixes IPv4 and IPv6"));
    }
    version = r->first;
    resolved.push_back(r->second);
  }
  return absl::StrCat("ipv", version, ":", absl::StrJoin(resolved, ","));
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           std::shared_ptr<grpc::ChannelCredentials> credentials,
                                           bool health_checked) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  std::string config = kServiceConfig;
  const bool several = absl::StartsWith(target, "dns:") ||
                       (target.find(',') != std::string::npos &&
                        (absl::StartsWith(target, "ipv4:") || absl::StartsWith(target, "ipv6:")));
  if (health_checked && several) {
    // One more member of the top-level object.
    config.insert(config.find('{') + 1, R"("healthCheckConfig": {"serviceName": ""},)");
  }
  args.SetServiceConfigJSON(config);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 1);
  return grpc::CreateCustomChannel(target, credentials, args);
}

}  // namespace lensd
