#include "server/listen_probe.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lensd {

void ExclusiveListenerOptions(int fd) {
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
}

std::string BindFailure(const std::string& host, int port) {
  std::string name = host;
  if (name.size() >= 2 && name.front() == '[') name = name.substr(1, name.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(name.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) return gai_strerror(rc);
  std::string why = "the address was refused (it binds when tried again: a transient failure?)";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    ExclusiveListenerOptions(fd);
    const bool bound = bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    const int error = errno;
    close(fd);
    if (!bound) {
      why = error == EADDRINUSE ? "address already in use (another process listens there)"
                                : std::strerror(error);
      break;
    }
  }
  freeaddrinfo(found);
  return why;
}

}  // namespace lensd
