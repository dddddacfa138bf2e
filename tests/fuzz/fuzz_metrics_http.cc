// libFuzzer target: arbitrary bytes to the metrics port over TCP (one connection per input);
// the endpoint must keep serving GET /metrics afterwards (checked every 100 inputs).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "server/metrics.h"

namespace {

int Port() {
  static std::unique_ptr<lensd::MetricsEndpoint> endpoint;  // for the whole run, stopped at exit
  static const int port = [] {
    for (int p = 29500; p < 29600; ++p) {
      auto started = lensd::MetricsEndpoint::Start("127.0.0.1", p);
      if (started.ok()) {
        endpoint = std::move(*started);
        return p;
      }
    }
    std::abort();
  }();
  return port;
}

// Sends `bytes`, reads the answer (until `timeout_us` passes without data), returns it. A
// fuzz input is followed by a half-close, so that the server sees where it ends (cpp-httplib
// then drops the answer: the client can no longer be writing to it, it assumes it gone).
// A failed connect() (e.g. no ephemeral port left) is returned as "connect: <reason>".
std::string Exchange(const void* bytes, size_t size, int timeout_us = 200000,
                     bool half_close = true) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(Port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{timeout_us / 1000000, timeout_us % 1000000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    (void)!send(fd, bytes, size, MSG_NOSIGNAL);
    if (half_close) shutdown(fd, SHUT_WR);
    char buf[4096];
    for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) answer.append(buf, n);
  } else {
    answer = std::string("connect: ") + std::strerror(errno);
  }
  close(fd);
  return answer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int runs = 0;
  Exchange(data, size);
  if (++runs % 100 == 0) {
    // Serving, not latency: a loaded machine (sanitizers, parallel builds) may be slow, and
    // tens of thousands of connections a second can leave the client without a free port for
    // a moment. Five tries a second apart, each failure reported.
    const char scrape[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (int attempt = 1;; ++attempt) {
      const std::string answer = Exchange(scrape, sizeof(scrape) - 1, 5000000, false);
      if (answer.rfind("HTTP/1.1 200", 0) == 0) break;
      std::fprintf(stderr, "scrape %d after %d inputs failed; answer: %.200s\n", attempt, runs,
                   answer.c_str());
      if (attempt == 5) std::abort();  // the endpoint stopped serving
      sleep(1);
    }
  }
  return 0;
}
