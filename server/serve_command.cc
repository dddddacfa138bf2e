#include "server/serve_command.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/model/json_fields.h"
#include "server/listen_probe.h"
#include "server/metrics.h"
#include "server/reflection_v1.h"
#include "server/offline_commands.h"
#include "server/service.h"

namespace lensd {
namespace {

const FlagTable& ServeOnlyFlags() {
  static const auto* table = new FlagTable{
      {"host", "0.0.0.0", "address to listen on"},
      {"port", "50051", "gRPC port (0: a free one, logged); a port in use is an error"},
      {"max-batch-tokens", "256", "prompt tokens per forward step (decode tokens always run)"},
      {"max-running", "64", "sequences holding KV blocks at once"},
      {"max-queue", "256", "requests accepted and unfinished; more get UNAVAILABLE"},
      {"max-prompt-tokens", "", "longer prompts get RESOURCE_EXHAUSTED (default: the model's "
                                "context)"},
      {"max-prompt-bytes", "", "longer text prompts get RESOURCE_EXHAUSTED before tokenizing "
                               "(default: 16 x the prompt limit)"},
      {"max-new-tokens-limit", "4096", "a larger max_new_tokens is INVALID_ARGUMENT"},
      {"max-capture-mib", "4096", "RunWithCache bytes per request, checked before running"},
      {"stall-timeout-s", "30", "a stream whose client stops reading this long is cancelled"},
      {"drain-timeout-s", "30", "on SIGTERM, how long accepted requests may still run"},
      {"auth-token", "", "require 'authorization: Bearer <token>' on every lensd.v1 call "
                         "(default: LENSD_AUTH_TOKEN, else off)"},
      {"tls-cert", "", "serve TLS with this PEM certificate (with --tls-key)"},
      {"tls-key", "", "the PEM key of --tls-cert"},
      {"metrics-port", "", "Prometheus /metrics on this port (default: off)"},
      {"metrics-host", "", "address the metrics port binds (default: --host)"},
      {"max-interventions", "256", "interventions per request, after hook patterns expand"},
      {"max-intervention-mib", "64", "intervention value bytes per request"},
      {"prefix-caching", "true", "share the KV blocks of common prefixes (true|false)"},
      {"max-sweep-cells", "4096", "PatchSweep grid cells per request"},
  };
  return *table;
}

struct ServeOptions {
  std::string host;
  int port = 50051;
  LoadOptions load;
  SchedulerOptions scheduler;
  ServiceOptions service;
  int drain_timeout_s = 30;
  int metrics_port = 0;
  std::string metrics_host;  // default: --host
  std::string tls_cert, tls_key;
  std::vector<std::string> saes;  // --sae NAME=DIR[@HOOK], loaded after the model
};

absl::StatusOr<ServeOptions> ParseServeFlags(const std::vector<std::string>& args) {
  ASSIGN_OR_RETURN(Flags flags, Flags::Parse(args, ServeFlags()));
  ServeOptions o;
  ASSIGN_OR_RETURN(o.load, LoadOptionsFromFlags(flags));
  for (const auto& [name, value] : flags.Occurrences({"sae"})) o.saes.push_back(value);
  if (!flags.Has("threads")) {
    // Leave one core to gRPC and the scheduler: CPU GEMM threads that busy-wait against the
    // network threads cost more than they gain (measured in bench/serve_bench.sh).
    o.load.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) - 1);
  }
  ASSIGN_OR_RETURN(o.port, flags.GetInt("port"));
  o.host = flags.Get("host");
  o.metrics_host = flags.Get("metrics-host", o.host);
  ASSIGN_OR_RETURN(o.scheduler.max_batch_tokens, flags.GetInt("max-batch-tokens"));
  ASSIGN_OR_RETURN(o.scheduler.max_running, flags.GetInt("max-running"));
  o.service.limits.max_running = o.scheduler.max_running;
  ASSIGN_OR_RETURN(o.scheduler.max_queue, flags.GetInt("max-queue"));
  const std::string prefix = flags.Get("prefix-caching");
  if (prefix != "true" && prefix != "false") {
    return absl::InvalidArgumentError("--prefix-caching must be true or false");
  }
  o.scheduler.prefix_caching = prefix == "true";
  ServerLimits& limits = o.service.limits;
  ASSIGN_OR_RETURN(limits.max_prompt_tokens, flags.GetInt("max-prompt-tokens", 0));
  ASSIGN_OR_RETURN(int prompt_bytes, flags.GetInt("max-prompt-bytes", 0));
  limits.max_prompt_bytes = prompt_bytes;
  ASSIGN_OR_RETURN(limits.max_new_tokens, flags.GetInt("max-new-tokens-limit"));
  ASSIGN_OR_RETURN(int capture_mib, flags.GetInt("max-capture-mib"));
  limits.max_capture_bytes = int64_t{capture_mib} << 20;
  ASSIGN_OR_RETURN(limits.interventions.max_interventions, flags.GetInt("max-interventions"));
  ASSIGN_OR_RETURN(int intervention_mib, flags.GetInt("max-intervention-mib"));
  limits.interventions.max_bytes = int64_t{intervention_mib} << 20;
  ASSIGN_OR_RETURN(o.service.max_sweep_cells, flags.GetInt("max-sweep-cells"));
  ASSIGN_OR_RETURN(int stall_s, flags.GetInt("stall-timeout-s"));
  o.service.stall_timeout = std::chrono::seconds(stall_s);
  ASSIGN_OR_RETURN(o.drain_timeout_s, flags.GetInt("drain-timeout-s"));
  ASSIGN_OR_RETURN(o.metrics_port, flags.GetInt("metrics-port", 0));
  const char* env_token = std::getenv("LENSD_AUTH_TOKEN");
  o.service.auth_token = flags.Get("auth-token", env_token ? env_token : "");
  o.tls_cert = flags.Get("tls-cert");
  o.tls_key = flags.Get("tls-key");
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (o.scheduler.max_batch_tokens < 1 || o.scheduler.max_running < 1 || o.scheduler.max_queue < 1 ||
      limits.max_new_tokens < 1 || capture_mib < 1 || stall_s < 1 || prompt_bytes < 0 ||
      limits.interventions.max_interventions < 0 || intervention_mib < 0 ||
      intervention_mib > 2000) {
    return absl::InvalidArgumentError(
        "--max-batch-tokens, --max-running, --max-queue, --max-new-tokens-limit, "
        "--max-capture-mib and --stall-timeout-s must be >= 1; --max-prompt-bytes, "
        "--max-interventions >= 0; --max-intervention-mib in [0, 2000]");
  }
  return o;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServeOptions& o) {
  if (o.tls_cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  ASSIGN_OR_RETURN(std::string cert, ReadFileToString(o.tls_cert));
  ASSIGN_OR_RETURN(std::string key, ReadFileToString(o.tls_key));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(ssl);
}

// Listens with health checking and reflection; `port` receives the bound port.
// `reflection` (v1; gRPC's plugin adds v1alpha) must outlive the server.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpc(const ServeOptions& o,
                                                        LensdService& service,
                                                        ReflectionV1& reflection, int* port) {
  ASSIGN_OR_RETURN(auto credentials, Credentials(o));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(o.host, ":", o.port), credentials, port);
  // gRPC sets SO_REUSEPORT by default: a second server on a taken port would then start and
  // silently take half of the first one's clients.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  builder.RegisterService(&reflection);
  builder.SetMaxSendMessageSize(4 << 20);
  // Requests carry prompts (bounded by --max-prompt-bytes) and intervention values (bounded by
  // --max-intervention-mib): room for both, the values checked again after parsing.
  const int64_t receive = (int64_t{4} << 20) + o.service.limits.interventions.max_bytes;
  builder.SetMaxReceiveMessageSize(static_cast<int>(receive));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", o.host, ":", o.port, ": ", BindFailure(o.host, o.port)));
  }
  return server;
}

// Waits until every accepted request has finished or the timeout passes.
void Drain(LensdService& service, const Scheduler& scheduler, int timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline &&
         (scheduler.Counters().active_jobs > 0 || service.OpenStreams() > 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int left = scheduler.Counters().active_jobs;
  if (left > 0) spdlog::warn("drain timeout: cancelling {} unfinished requests", left);
}

// The largest generation step (every running sequence's decode token plus a full prompt
// chunk) must fit the device's activation budget; capture prompts are checked per request.
absl::Status CheckStepsFit(const Model& model, const SchedulerOptions& s) {
  const int64_t need = StepActivationBytes(model.config(), s.max_running + s.max_batch_tokens,
                                           s.max_batch_tokens);
  const int64_t budget = model.activation_budget();
  if (budget > 0 && need > budget) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a step of --max-running ", s.max_running, " decode tokens and --max-batch-tokens ",
        s.max_batch_tokens, " needs about ", need >> 20, " MiB of activations; raise "
        "--activation-mib (", budget >> 20, ") or lower those"));
  }
  return absl::OkStatus();
}

// The model and its --sae SAEs.
absl::StatusOr<std::unique_ptr<Model>> LoadServedModel(const ServeOptions& o, SaeSet* saes) {
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(o.load));
  RETURN_IF_ERROR(CheckStepsFit(*model, o.scheduler));
  ASSIGN_OR_RETURN(*saes, LoadSaes(*model, o.saes));
  return model;
}

// Blocks SIGTERM and SIGINT before any thread exists, so every thread inherits the mask and
// only the sigwait in ServeCommand receives them.
sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace

FlagTable ServeFlags() { return Concat({ModelFlags(), ServeOnlyFlags()}); }

absl::Status ServeCommand(const std::vector<std::string>& args) {
  const sigset_t signals = BlockShutdownSignals();
  ASSIGN_OR_RETURN(ServeOptions o, ParseServeFlags(args));
  const std::string& host = o.host;
  std::unique_ptr<MetricsEndpoint> metrics;
  if (o.metrics_port > 0) {
    ASSIGN_OR_RETURN(metrics, MetricsEndpoint::Start(o.metrics_host, o.metrics_port));
    spdlog::info("metrics on http://{}:{}/metrics", o.metrics_host, o.metrics_port);
  }
  spdlog::info("compute threads: {}", o.load.threads);

  LensdService service(o.service);
  ReflectionV1 reflection({lensd::v1::Lensd::service_full_name(), "grpc.health.v1.Health",
                           "grpc.reflection.v1.ServerReflection",
                           "grpc.reflection.v1alpha.ServerReflection"});
  int port = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<grpc::Server> server,
                   StartGrpc(o, service, reflection, &port));
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  spdlog::info("listening on {}:{} (NOT_SERVING until the model is loaded)", host, port);

  SaeSet saes;
  absl::StatusOr<std::unique_ptr<Model>> model = LoadServedModel(o, &saes);
  if (!model.ok()) {
    server->Shutdown();
    return model.status();
  }
  auto scheduler = std::make_unique<Scheduler>(**model, o.scheduler);
  if (metrics) metrics->Attach(scheduler.get());
  const std::string name = o.load.model_dir.empty() ? "builtin:tiny" : o.load.model_dir;
  service.AttachModel({model->get(), scheduler.get(), name,
                       o.load.processing.fold_ln ? "transformer-lens" : "none", &saes});
  health->SetServingStatus(true);
  spdlog::info("ready: serving lensd.v1.Lensd ({}) on {}:{}", name, host, port);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}: draining (new requests get UNAVAILABLE)",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
  health->SetServingStatus(false);
  service.StartDrain();
  Drain(service, *scheduler, o.drain_timeout_s);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (metrics) metrics->Attach(nullptr);
  scheduler.reset();
  spdlog::info("stopped");
  return absl::OkStatus();
}

}  // namespace lensd
