// Why a listening socket cannot be had: gRPC and cpp-httplib only report that binding failed.
#ifndef LENSD_SERVER_LISTEN_PROBE_H_
#define LENSD_SERVER_LISTEN_PROBE_H_

#include <string>

namespace lensd {

// Binds host:port once the way both listeners do (SO_REUSEADDR, never SO_REUSEPORT) and
// returns why that fails, e.g. "address already in use (another process listens there)";
// a generic reason when the probe itself binds.
std::string BindFailure(const std::string& host, int port);

// For cpp-httplib's set_socket_options: SO_REUSEADDR only. Its default adds SO_REUSEPORT, with
// which a second process binds the same port and takes part of the first one's connections.
void ExclusiveListenerOptions(int fd);

}  // namespace lensd

#endif  // LENSD_SERVER_LISTEN_PROBE_H_
