#include "server/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <atomic>
#include <exception>

#include "absl/strings/str_cat.h"

namespace lensd {
namespace {

class SchedulerCollector : public prometheus::Collectable {
 public:
  void Attach(const Scheduler* scheduler) { scheduler_ = scheduler; }
  std::vector<prometheus::MetricFamily> Collect() const override {
    const Scheduler* scheduler = scheduler_.load();
    std::vector<prometheus::MetricFamily> out;
    if (scheduler == nullptr) return out;  // still loading
    const SchedulerCounters c = scheduler->Counters();
    auto add = [&](const char* name, const char* help, prometheus::MetricType type, double v) {
      prometheus::ClientMetric m;
      if (type == prometheus::MetricType::Counter) {
        m.counter.value = v;
      } else {
        m.gauge.value = v;
      }
      out.push_back({name, help, type, {m}});
    };
    using prometheus::MetricType;
    add("lensd_kv_blocks_free", "Free paged-KV blocks", MetricType::Gauge, c.kv_blocks_free);
    add("lensd_kv_blocks_total", "Paged-KV blocks", MetricType::Gauge, c.kv_blocks_total);
    add("lensd_active_requests", "Accepted requests not yet finished", MetricType::Gauge, c.active_jobs);
    add("lensd_queued_sequences", "Sequences waiting for KV admission", MetricType::Gauge, c.queued_seqs);
    add("lensd_steps_total", "Forward steps run", MetricType::Counter, static_cast<double>(c.steps));
    add("lensd_generated_tokens_total", "Tokens generated", MetricType::Counter,
        static_cast<double>(c.generated_tokens));
    add("lensd_prompt_tokens_total", "Prompt tokens processed", MetricType::Counter,
        static_cast<double>(c.prompt_tokens));
    add("lensd_preemptions_total", "Sequences preempted for KV blocks", MetricType::Counter,
        static_cast<double>(c.preemptions));
    return out;
  }

 private:
  std::atomic<const Scheduler*> scheduler_{nullptr};
};

}  // namespace

struct MetricsEndpoint::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<SchedulerCollector> collector;
};

MetricsEndpoint::MetricsEndpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsEndpoint::~MetricsEndpoint() = default;

void MetricsEndpoint::Attach(const Scheduler* scheduler) { impl_->collector->Attach(scheduler); }

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& bind_address) {
  auto impl = std::make_unique<Impl>();
  // prometheus-cpp reports a failed bind by throwing; keep that at this boundary.
  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(bind_address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", bind_address, ": ", e.what()));
  }
  impl->collector = std::make_shared<SchedulerCollector>();
  impl->exposer->RegisterCollectable(impl->collector);
  return std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint(std::move(impl)));
}

}  // namespace lensd
