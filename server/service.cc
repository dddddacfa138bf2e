#include "server/service.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "server/patch_sweep.h"
#include "server/sinks.h"

namespace lensd {
namespace {

// "host:pid" of this process.
const std::string& Instance() {
  static const std::string* instance = [] {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    return new std::string(absl::StrCat(host, ":", getpid()));
  }();
  return *instance;
}

Clock::time_point SteadyDeadline(const grpc::CallbackServerContext* ctx) {
  const auto deadline = ctx->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return Clock::time_point::max();
  return Clock::now() + (deadline - std::chrono::system_clock::now());
}

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

// An SAE's feature hooks are [1, P, d_sae] (of whichever SAE a request attaches there); its
// other hooks have its hook's width, flattened over heads.
void AddHookInfos(const ModelConfig& c, const std::vector<HookId>& hooks,
                  google::protobuf::RepeatedPtrField<v1::HookInfo>* out) {
  for (HookId id : hooks) {
    v1::HookInfo* h = out->Add();
    h->set_name(HookName(id));
    if (!id.attached()) {
      h->set_shape(HookShapeFormula(c, id.point));
      continue;
    }
    const auto sub = static_cast<AttachedHook>(id.sub);
    const bool features = sub == AttachedHook::kSaeActsPre || sub == AttachedHook::kSaeActsPost;
    h->set_shape(features ? "[1, P, d_sae]"
                          : absl::StrCat("[1, P, ", PositionWidth(c, id.point), "]"));
  }
}

// Where the loaded SAEs attach, each hook once.
std::vector<HookId> SaeSites(const SaeSet* saes) {
  std::vector<HookId> sites;
  for (const auto& [name, sae] : saes != nullptr ? *saes : SaeSet{}) {
    if (std::find(sites.begin(), sites.end(), sae->spec().site) == sites.end()) {
      sites.push_back(sae->spec().site);
    }
  }
  return sites;
}

void AddSaeInfos(const SaeSet* saes, google::protobuf::RepeatedPtrField<v1::SaeInfo>* out) {
  for (const auto& [name, sae] : saes != nullptr ? *saes : SaeSet{}) {
    const SaeSpec& s = sae->spec();
    v1::SaeInfo* info = out->Add();
    info->set_name(name);
    info->set_hook(HookName(s.site));
    info->set_kind(SaeKindName(s.kind));
    info->set_d_in(static_cast<int32_t>(s.d_in));
    info->set_d_sae(static_cast<int32_t>(s.d_sae));
    info->set_dir(s.dir);
  }
}

void ToWire(const DeviceLayout& d, v1::DeviceInfo* out) {
  out->set_name(d.name);
  out->set_first_layer(d.first_layer);
  out->set_end_layer(d.end_layer);
  out->set_weight_bytes(static_cast<int64_t>(d.weight_bytes));
  out->set_kv_bytes(static_cast<int64_t>(d.kv_bytes));
  out->set_offloaded_layers(d.offloaded_layers);
  out->set_offloaded_bytes(static_cast<int64_t>(d.offloaded_bytes));
}

// Compares every byte whatever the first difference, so response time says nothing about
// how much of a guessed token was right (only whether its length was).
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

template <class Msg>
StreamReactor<Msg>* Fail(StreamReactor<Msg>* reactor, const absl::Status& status) {
  reactor->outbox()->Close(ToGrpc(status));
  return reactor;
}

}  // namespace

LensdService::LensdService(ServiceOptions options) : options_(std::move(options)) {
  watchdog_ = std::thread([this] { Watchdog(); });
}

LensdService::~LensdService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  watchdog_.join();
}

void LensdService::AttachModel(const ServingModel& serving) {
  serving_ = serving;
  attached_ = true;
}

void LensdService::StartDrain() { draining_ = true; }

int LensdService::OpenStreams() {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const auto& s : streams_) n += s.expired() ? 0 : 1;
  return n;
}

void LensdService::Track(std::shared_ptr<StreamState> stream) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.push_back(std::move(stream));
}

void LensdService::Watchdog() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop_; })) {
    const Clock::time_point now = Clock::now();
    std::vector<std::weak_ptr<StreamState>> live;
    for (auto& weak : streams_) {
      if (std::shared_ptr<StreamState> s = weak.lock()) {
        s->CheckStall(now, options_.stall_timeout);
        live.push_back(std::move(weak));
      }
    }
    streams_.swap(live);
  }
}

absl::Status LensdService::Gate(grpc::CallbackServerContext* ctx) const {
  if (!options_.auth_token.empty()) {
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    const std::string want = absl::StrCat("Bearer ", options_.auth_token);
    if (it == md.end() ||
        !ConstantTimeEquals(std::string_view(it->second.data(), it->second.size()), want)) {
      return absl::UnauthenticatedError("missing or wrong bearer token (authorization metadata)");
    }
  }
  if (!attached_) return absl::UnavailableError("the model is still loading; retry shortly");
  if (draining_) {
    // Tells clients' retry policies not to retry here (gRPC's server pushback): the server is
    // going away; balanced clients have already stopped picking it through its health.
    ctx->AddTrailingMetadata("grpc-retry-pushback-ms", "-1");
    return absl::UnavailableError("the server is draining and accepts no new requests");
  }
  return absl::OkStatus();
}

absl::StatusOr<const Tokenizer*> LensdService::GateTokenizer(grpc::CallbackServerContext* ctx) const {
  RETURN_IF_ERROR(Gate(ctx));
  const Tokenizer* tokenizer = serving_.model->tokenizer();
  if (tokenizer == nullptr) return absl::FailedPreconditionError("the model has no tokenizer");
  return tokenizer;
}

ModelFacts LensdService::Facts() const {
  BlockAllocator& blocks = serving_.model->blocks();
  return {&serving_.model->config(),
          serving_.model->tokenizer(),
          serving_.model->dtype(),
          blocks.num_blocks() * blocks.block_size(),
          serving_.model->activation_budget(),
          serving_.model->GradientSupport(),
          serving_.saes};
}

absl::Status LensdService::SubmitJob(Job job, grpc::CallbackServerContext* ctx,
                                     std::shared_ptr<StreamState> stream) {
  job.deadline = SteadyDeadline(ctx);
  Track(std::move(stream));
  return serving_.scheduler->Submit(std::move(job));
}

grpc::ServerWriteReactor<v1::GenerateEvent>* LensdService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  auto* reactor = new StreamReactor<v1::GenerateEvent>(ctx);
  absl::Status gate = Gate(ctx);
  if (!gate.ok()) return Fail(reactor, gate);
  const ModelFacts facts = Facts();
  absl::StatusOr<Job> job = ToGenerateJob(*request, facts, options_.limits);
  if (!job.ok()) return Fail(reactor, job.status());
  job->sink = std::make_shared<GenerateSink>(reactor->outbox(), facts.tokenizer, job->prompts[0]);
  absl::Status submitted = SubmitJob(*std::move(job), ctx, reactor->outbox());
  if (!submitted.ok()) return Fail(reactor, submitted);
  return reactor;
}

grpc::ServerWriteReactor<v1::CacheMessage>* LensdService::RunWithCache(
    grpc::CallbackServerContext* ctx, const v1::RunWithCacheRequest* request) {
  auto* reactor = new StreamReactor<v1::CacheMessage>(ctx);
  absl::Status gate = Gate(ctx);
  if (!gate.ok()) return Fail(reactor, gate);
  absl::StatusOr<CaptureRequest> capture = ToCaptureRequest(*request, Facts(), options_.limits);
  if (!capture.ok()) return Fail(reactor, capture.status());
  v1::CacheMessage header_message;
  v1::CacheHeader* header = header_message.mutable_header();
  std::vector<int64_t> lengths;
  for (const auto& ids : capture->job.prompts) {
    header->add_prompt_ids()->mutable_ids()->Add(ids.begin(), ids.end());
    lengths.push_back(static_cast<int64_t>(ids.size()));
  }
  for (const WireTensor& t : capture->manifest) FillTensorInfo(t, header->add_manifest());
  header->set_total_bytes(capture->total_bytes);
  reactor->outbox()->Push(std::move(header_message));
  capture->job.sink =
      std::make_shared<CaptureSink>(reactor->outbox(), capture->slice, capture->dtype,
                                    std::move(lengths), capture->feature_top_k);
  absl::Status submitted = SubmitJob(std::move(capture->job), ctx, reactor->outbox());
  if (!submitted.ok()) return Fail(reactor, submitted);
  return reactor;
}

namespace {

// Turns a sweep's progress into PatchSweep stream messages.
class SweepStream : public SweepObserver {
 public:
  using Outbox = StreamReactor<v1::PatchSweepMessage>::Outbox;
  explicit SweepStream(std::shared_ptr<Outbox> out) : out_(std::move(out)) {}
  bool Cancelled() const override { return out_->Cancelled(); }
  void OnHeader(const v1::SweepHeader& header) override {
    v1::PatchSweepMessage m;
    *m.mutable_header() = header;
    out_->Push(std::move(m));
  }
  void OnCell(const v1::SweepCell& cell) override {
    v1::PatchSweepMessage m;
    *m.mutable_cell() = cell;
    out_->Push(std::move(m));
  }
  void OnFinish(const absl::Status& status, const v1::SweepDone& done) override {
    if (status.ok()) {
      v1::PatchSweepMessage m;
      *m.mutable_done() = done;
      out_->Push(std::move(m));
    }
    out_->Close(ToGrpc(status));
  }

 private:
  std::shared_ptr<Outbox> out_;
};

}  // namespace

grpc::ServerWriteReactor<v1::PatchSweepMessage>* LensdService::PatchSweep(
    grpc::CallbackServerContext* ctx, const v1::PatchSweepRequest* request) {
  auto* reactor = new StreamReactor<v1::PatchSweepMessage>(ctx);
  absl::Status gate = Gate(ctx);
  if (!gate.ok()) return Fail(reactor, gate);
  absl::StatusOr<SweepSpec> spec =
      ToSweepSpec(*request, Facts(), options_.limits, options_.max_sweep_cells);
  if (!spec.ok()) return Fail(reactor, spec.status());
  Track(reactor->outbox());
  absl::Status started = serving_.scheduler->Submit(MakeSweepProgram(
      serving_.model->config(), std::make_shared<const SweepSpec>(*std::move(spec)),
      std::make_shared<SweepStream>(reactor->outbox()), SteadyDeadline(ctx)));
  if (!started.ok()) return Fail(reactor, started);
  return reactor;
}

grpc::ServerUnaryReactor* LensdService::Tokenize(grpc::CallbackServerContext* ctx,
                                                 const v1::TokenizeRequest* request,
                                                 v1::TokenizeResponse* response) {
  absl::StatusOr<const Tokenizer*> tokenizer = GateTokenizer(ctx);
  if (!tokenizer.ok()) return Reply(ctx, tokenizer.status());
  absl::Status size =
      CheckTextSize(request->text(), "text", serving_.model->config(), options_.limits);
  if (!size.ok()) return Reply(ctx, size);
  absl::StatusOr<std::vector<int>> ids = (*tokenizer)->Encode(request->text());
  if (!ids.ok()) return Reply(ctx, absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message())));
  for (int id : *ids) {
    response->add_ids(id);
    response->add_pieces((*tokenizer)->Decode({id}));
  }
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* LensdService::Detokenize(grpc::CallbackServerContext* ctx,
                                                   const v1::DetokenizeRequest* request,
                                                   v1::DetokenizeResponse* response) {
  absl::StatusOr<const Tokenizer*> tokenizer = GateTokenizer(ctx);
  if (!tokenizer.ok()) return Reply(ctx, tokenizer.status());
  absl::Status ids = CheckTokenIds(request->ids(), serving_.model->config().vocab_size, "ids");
  if (!ids.ok()) return Reply(ctx, ids);
  response->set_text((*tokenizer)->Decode({request->ids().begin(), request->ids().end()}));
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* LensdService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                     const v1::GetModelInfoRequest*,
                                                     v1::ModelInfo* info) {
  absl::Status gate = Gate(ctx);
  if (!gate.ok()) return Reply(ctx, gate);
  const ModelConfig& c = serving_.model->config();
  info->set_architecture(c.model_type);
  info->set_model(serving_.name);
  info->set_n_layers(c.n_layers);
  info->set_d_model(c.d_model);
  info->set_n_heads(c.n_heads);
  info->set_n_kv_heads(c.n_kv_heads);
  info->set_d_head(c.d_head);
  info->set_d_mlp(c.d_mlp);
  info->set_vocab_size(c.vocab_size);
  info->set_max_positions(c.max_positions);
  info->set_dtype(ToWire(Facts().dtype));
  info->set_processing(serving_.processing);
  for (const DeviceLayout& d : serving_.model->Devices()) ToWire(d, info->add_devices());
  AddHookInfos(c, AllHooks(c, SaeSites(serving_.saes)), info->mutable_hooks());
  AddSaeInfos(serving_.saes, info->mutable_saes());
  info->set_has_tokenizer(serving_.model->tokenizer() != nullptr);
  info->set_bos_token_id(c.bos_id);
  info->set_normalization(c.norm == NormKind::kLayerNorm ? "LN" : "RMS");
  for (int32_t eos : c.eos_ids) info->add_eos_token_ids(eos);
  const SchedulerCounters counters = serving_.scheduler->Counters();
  info->set_kv_block_size(serving_.model->blocks().block_size());
  info->set_kv_blocks_total(counters.kv_blocks_total);
  info->set_kv_blocks_free(counters.kv_blocks_free);
  info->set_active_requests(counters.active_jobs);
  info->set_queued_requests(counters.queued_seqs);
  info->set_kv_blocks_cached(counters.kv_blocks_cached);
  info->set_prefix_hit_blocks(counters.prefix_hit_blocks);
  info->set_prefix_hit_tokens(counters.prefix_hit_tokens);
  info->set_gradients_unavailable(std::string(serving_.model->GradientSupport().message()));
  info->set_gradient_requests(counters.gradient_requests);
  info->set_gradient_tokens(counters.gradient_tokens);
  info->set_max_sweep_cells(options_.max_sweep_cells);
  const ServerLimits& limits = options_.limits;
  info->set_max_prompt_tokens(MaxPromptTokens(c, limits));
  info->set_max_new_tokens(limits.max_new_tokens);
  info->set_max_capture_bytes(limits.max_capture_bytes);
  info->set_max_prompt_bytes(MaxPromptBytes(c, limits));
  info->set_max_interventions(limits.interventions.max_interventions);
  info->set_max_intervention_bytes(limits.interventions.max_bytes);
  info->set_cpu_kernels(serving_.model->CpuKernels());
  info->set_instance(Instance());
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* LensdService::ListHooks(grpc::CallbackServerContext* ctx,
                                                  const v1::ListHooksRequest* request,
                                                  v1::ListHooksResponse* response) {
  absl::Status gate = Gate(ctx);
  if (!gate.ok()) return Reply(ctx, gate);
  const ModelConfig& c = serving_.model->config();
  absl::StatusOr<HookSelection> selection =
      ParseNamesFilter(c, request->names_filter(), SaeSites(serving_.saes));
  if (!selection.ok()) return Reply(ctx, selection.status());
  AddHookInfos(c, selection->hooks(), response->mutable_hooks());
  return Reply(ctx, absl::OkStatus());
}

}  // namespace lensd
