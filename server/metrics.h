// Prometheus metrics (`/metrics` on --metrics-port): scheduler counters read at scrape time.
#ifndef LENSD_SERVER_METRICS_H_
#define LENSD_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/scheduler.h"

namespace lensd {

class MetricsEndpoint {
 public:
  // Serves http://host:port/metrics (Prometheus text format; empty until Attach) on a thread
  // of its own; any other request gets an HTTP error, never a crash. Stops on destruction.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& host, int port);
  // Publishes `scheduler`'s counters (it must outlive the endpoint or a later Attach(nullptr)).
  void Attach(const Scheduler* scheduler);
  ~MetricsEndpoint();

 private:
  struct Impl;
  explicit MetricsEndpoint(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lensd

#endif  // LENSD_SERVER_METRICS_H_
