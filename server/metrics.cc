#include "server/metrics.h"

#include <httplib.h>
#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/listen_probe.h"

namespace lensd {
namespace {

using prometheus::MetricType;

void AddMetric(std::vector<prometheus::MetricFamily>& out, const char* name, const char* help,
               MetricType type, double value) {
  prometheus::ClientMetric m;
  if (type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  out.push_back({name, help, type, {m}});
}

std::vector<prometheus::MetricFamily> Families(const SchedulerCounters& c) {
  std::vector<prometheus::MetricFamily> out;
  AddMetric(out, "lensd_kv_blocks_free", "Free paged-KV blocks", MetricType::Gauge,
            c.kv_blocks_free);
  AddMetric(out, "lensd_kv_blocks_total", "Paged-KV blocks", MetricType::Gauge, c.kv_blocks_total);
  AddMetric(out, "lensd_active_requests", "Accepted requests not yet finished", MetricType::Gauge,
            c.active_jobs);
  AddMetric(out, "lensd_queued_sequences", "Sequences waiting for KV admission",
            MetricType::Gauge, c.queued_seqs);
  AddMetric(out, "lensd_steps_total", "Forward steps run", MetricType::Counter,
            static_cast<double>(c.steps));
  AddMetric(out, "lensd_generated_tokens_total", "Tokens generated", MetricType::Counter,
            static_cast<double>(c.generated_tokens));
  AddMetric(out, "lensd_prompt_tokens_total", "Prompt tokens processed", MetricType::Counter,
            static_cast<double>(c.prompt_tokens));
  AddMetric(out, "lensd_preemptions_total", "Sequences preempted for KV blocks",
            MetricType::Counter, static_cast<double>(c.preemptions));
  AddMetric(out, "lensd_kv_blocks_cached", "KV blocks published for prefix reuse",
            MetricType::Gauge, c.kv_blocks_cached);
  AddMetric(out, "lensd_prefix_hit_blocks_total", "KV blocks taken from the prefix cache",
            MetricType::Counter, static_cast<double>(c.prefix_hit_blocks));
  AddMetric(out, "lensd_prefix_hit_tokens_total", "Prompt tokens served from the prefix cache",
            MetricType::Counter, static_cast<double>(c.prefix_hit_tokens));
  AddMetric(out, "lensd_kv_blocks_evicted_total", "Cached KV blocks evicted for room",
            MetricType::Counter, static_cast<double>(c.kv_blocks_evicted));
  AddMetric(out, "lensd_gradient_requests_total", "Requests run forward and backward (gradients)",
            MetricType::Counter, static_cast<double>(c.gradient_requests));
  AddMetric(out, "lensd_gradient_tokens_total", "Prompt tokens of those requests",
            MetricType::Counter, static_cast<double>(c.gradient_tokens));
  prometheus::MetricFamily ops{"lensd_interventions_total",
                               "Interventions in accepted requests, by op",
                               MetricType::Counter,
                               {}};
  for (int k = 0; k < kNumInterventionOps; ++k) {
    prometheus::ClientMetric m;
    m.label = {{"op", OpName(static_cast<InterventionOp>(k))}};
    m.counter.value = static_cast<double>(c.interventions[k]);
    ops.metric.push_back(m);
  }
  out.push_back(ops);
  return out;
}

}  // namespace

// prometheus-cpp's own exposer (civetweb 1.15 in Debian) dies with SIGSEGV on any request
// other than GET /metrics, so the text exposition is served by cpp-httplib instead: unknown
// paths get 404, other methods 405, and a small fixed pool with short timeouts bounds what
// idle or slow clients can hold.
struct MetricsEndpoint::Impl {
  httplib::Server http;
  std::thread thread;
  std::atomic<const Scheduler*> scheduler{nullptr};

  std::string Scrape() const {
    const Scheduler* s = scheduler.load();
    if (s == nullptr) return "";  // still loading
    return prometheus::TextSerializer().Serialize(Families(s->Counters()));
  }
};

MetricsEndpoint::MetricsEndpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsEndpoint::~MetricsEndpoint() {
  impl_->http.stop();
  impl_->thread.join();
}

void MetricsEndpoint::Attach(const Scheduler* scheduler) { impl_->scheduler = scheduler; }

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& host,
                                                                        int port) {
  auto impl = std::make_unique<Impl>();
  httplib::Server& http = impl->http;
  Impl* state = impl.get();
  http.new_task_queue = [] { return new httplib::ThreadPool(2); };
  http.set_read_timeout(2).set_write_timeout(2).set_keep_alive_timeout(2);
  http.set_keep_alive_max_count(100).set_payload_max_length(4096);
  http.Get("/metrics", [state](const httplib::Request&, httplib::Response& res) {
    res.set_content(state->Scrape(), "text/plain; version=0.0.4");
  });
  // Every other method on /metrics: 405 with the allowed one (GET, and HEAD through it).
  auto not_allowed = [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
  };
  http.Post("/metrics", not_allowed).Put("/metrics", not_allowed).Delete("/metrics", not_allowed);
  http.Patch("/metrics", not_allowed).Options("/metrics", not_allowed);
  http.set_socket_options(ExclusiveListenerOptions);
  if (!http.bind_to_port(host, port)) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", BindFailure(host, port)));
  }
  impl->thread = std::thread([state] { state->http.listen_after_bind(); });
  return std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint(std::move(impl)));
}

}  // namespace lensd
