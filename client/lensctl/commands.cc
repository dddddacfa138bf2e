#include "client/lensctl/commands.h"

#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/interventions_json.h"
#include "cli/request_flags.h"
#include "engine/core/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "lensd/v1/lensd.grpc.pb.h"

namespace lensd {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// Every --prompt / --token-ids, in order.
absl::StatusOr<std::vector<v1::Prompt>> PromptsFromFlags(const Flags& flags) {
  ASSIGN_OR_RETURN(std::vector<PromptArg> args, PromptArgs(flags));
  std::vector<v1::Prompt> prompts(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].text) {
      prompts[i].set_text(args[i].value);
    } else {
      prompts[i].mutable_tokens()->mutable_ids()->Add(args[i].ids.begin(), args[i].ids.end());
    }
  }
  return prompts;
}

absl::Status InterventionsFromFile(const Flags& flags, WireInterventions* out) {
  if (!flags.Has("interventions")) return absl::OkStatus();
  return ReadInterventionsFile(flags.Get("interventions"), out);
}

// Every --sae NAME (with --splice) as the request's attachments.
void SaesFromFlags(const Flags& flags, google::protobuf::RepeatedPtrField<v1::SaeAttach>* out) {
  for (const auto& [flag, name] : flags.Occurrences({"sae"})) {
    v1::SaeAttach* a = out->Add();
    a->set_name(name);
    a->set_splice(flags.Has("splice"));
  }
}

// Reassembles float32 tensors from a RunWithCache stream, per prompt.
class CacheAssembler {
 public:
  absl::Status Add(const v1::TensorChunk& chunk) {
    const v1::TensorInfo& t = chunk.tensor();
    if (t.dtype() != v1::DTYPE_FLOAT32) return absl::DataLossError("expected float32 tensors");
    Buffer& b = tensors_[{t.prompt_index(), t.name()}];
    if (b.empty()) b = Buffer::Host(DType::kF32, Shape::FromVector({t.shape().begin(), t.shape().end()}));
    if (chunk.offset() < 0 || chunk.offset() + chunk.data().size() > b.NumBytes()) {
      return absl::DataLossError(absl::StrCat("chunk of ", t.name(), " outside its tensor"));
    }
    std::memcpy(b.As<char>() + chunk.offset(), chunk.data().data(), chunk.data().size());
    received_ += static_cast<int64_t>(chunk.data().size());
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<CacheResult>> Finish(int64_t expected_bytes, int prompts) {
    if (received_ != expected_bytes) {
      return absl::DataLossError(absl::StrCat("received ", received_, " of ", expected_bytes, " bytes"));
    }
    std::vector<CacheResult> results(prompts);
    for (auto& [key, buffer] : tensors_) {
      if (key.first < 0 || key.first >= prompts) return absl::DataLossError("bad prompt index");
      CacheResult& r = results[key.first];
      if (key.second == "logits") {
        r.logits = std::move(buffer);
      } else {
        r.cache[key.second] = std::move(buffer);
      }
    }
    for (const CacheResult& r : results) {
      if (r.logits.empty()) return absl::DataLossError("the stream carried no logits");
    }
    return results;
  }

 private:
  std::map<std::pair<int, std::string>, Buffer> tensors_;
  int64_t received_ = 0;
};

}  // namespace

std::unique_ptr<grpc::ClientContext> Connection::NewContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!auth_token.empty()) ctx->AddMetadata("authorization", "Bearer " + auth_token);
  if (timeout_s > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  }
  return ctx;
}

absl::Status GenerateRemote(const Connection& c, const Flags& flags, std::ostream& out) {
  v1::GenerateRequest request;
  RETURN_IF_ERROR(SamplingFromFlags(flags, &request));
  ASSIGN_OR_RETURN(std::vector<v1::Prompt> prompts, PromptsFromFlags(flags));
  if (prompts.size() != 1) return absl::InvalidArgumentError("generate takes one prompt");
  *request.mutable_prompt() = prompts[0];
  RETURN_IF_ERROR(InterventionsFromFile(flags, request.mutable_interventions()));
  SaesFromFlags(flags, request.mutable_saes());
  auto stub = v1::Lensd::NewStub(c.channel);
  auto ctx = c.NewContext();
  auto reader = stub->Generate(ctx.get(), request);
  v1::GenerateEvent event;
  v1::GenerateDone done;
  bool finished = false;
  while (reader->Read(&event)) {
    if (event.has_done()) done = event.done(), finished = true;
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  if (!finished) return absl::DataLossError("the stream ended without a done event");
  out << FormatGeneration(std::vector<int32_t>(done.ids().begin(), done.ids().end()), done.text());
  return absl::OkStatus();
}

absl::Status CacheRemote(const Connection& c, const Flags& flags, std::ostream& out) {
  if (!flags.Has("out")) return absl::InvalidArgumentError("--out FILE.safetensors is required");
  v1::RunWithCacheRequest request;
  ASSIGN_OR_RETURN(std::vector<v1::Prompt> prompts, PromptsFromFlags(flags));
  for (v1::Prompt& p : prompts) *request.add_prompts() = std::move(p);
  RETURN_IF_ERROR(InterventionsFromFile(flags, request.mutable_interventions()));
  SaesFromFlags(flags, request.mutable_saes());
  for (const std::string& h : flags.GetList("hooks")) request.add_names_filter(h);
  if (flags.Has("grad"))
    RETURN_IF_ERROR(ObjectiveFromFlag(flags.Get("grad"), request.mutable_objective()));
  request.set_dtype(v1::DTYPE_FLOAT32);
  auto stub = v1::Lensd::NewStub(c.channel);
  auto ctx = c.NewContext();
  auto reader = stub->RunWithCache(ctx.get(), request);
  v1::CacheMessage message;
  v1::CacheHeader header;
  v1::CacheDone done;
  CacheAssembler assembler;
  absl::Status status;
  while (reader->Read(&message)) {
    if (message.has_header()) header = message.header();
    if (message.has_chunk() && status.ok()) status = assembler.Add(message.chunk());
    if (message.has_done()) done = message.done();
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  RETURN_IF_ERROR(status);
  if (header.prompt_ids_size() != request.prompts_size()) {
    return absl::DataLossError("the stream carried no header");
  }
  ASSIGN_OR_RETURN(std::vector<CacheResult> results,
                   assembler.Finish(header.total_bytes(), header.prompt_ids_size()));
  for (int p = 0; p < done.objective_size() && p < static_cast<int>(results.size()); ++p) {
    results[p].objective = done.objective(p);
  }
  std::vector<std::vector<int32_t>> ids;
  for (const v1::TokenIds& p : header.prompt_ids()) ids.emplace_back(p.ids().begin(), p.ids().end());
  RETURN_IF_ERROR(WriteCacheFile(flags.Get("out"), ids, results));
  out << CacheSummary(flags.Get("out"), ids, results);
  return absl::OkStatus();
}

absl::Status InfoRemote(const Connection& c, const Flags& flags, std::ostream& out) {
  auto stub = v1::Lensd::NewStub(c.channel);
  auto ctx = c.NewContext();
  v1::ModelInfo info;
  RETURN_IF_ERROR(FromGrpc(stub->GetModelInfo(ctx.get(), {}, &info)));
  out << "model: " << info.model() << " (" << info.architecture() << ", processing "
      << info.processing() << ")\n"
      << "layers " << info.n_layers() << ", d_model " << info.d_model() << ", heads "
      << info.n_heads() << " (kv " << info.n_kv_heads() << ") x " << info.d_head() << ", d_mlp "
      << info.d_mlp() << ", vocab " << info.vocab_size() << ", context " << info.max_positions()
      << ", dtype " << v1::DType_Name(info.dtype()) << "\n";
  for (const v1::DeviceInfo& d : info.devices()) {
    out << "device " << d.name() << ": layers " << d.first_layer() << "-" << d.end_layer() - 1
        << ", weights " << d.weight_bytes() << " B, kv " << d.kv_bytes() << " B\n";
  }
  out << "kv blocks: " << info.kv_blocks_free() << " free of " << info.kv_blocks_total() << " ("
      << info.kv_block_size() << " tokens each); requests: " << info.active_requests()
      << " active, " << info.queued_requests() << " queued\n"
      << "limits: prompt " << info.max_prompt_tokens() << " tokens, max_new_tokens "
      << info.max_new_tokens() << ", capture " << info.max_capture_bytes() << " B\n";
  if (!info.cpu_kernels().empty()) out << "cpu kernels: " << info.cpu_kernels() << "\n";
  if (flags.Has("hooks")) {
    for (const v1::HookInfo& h : info.hooks()) out << h.name() << " " << h.shape() << "\n";
  }
  return absl::OkStatus();
}

absl::Status TokenizeRemote(const Connection& c, const Flags& flags, std::ostream& out) {
  if (!flags.Has("prompt")) return absl::InvalidArgumentError("--prompt TEXT is required");
  auto stub = v1::Lensd::NewStub(c.channel);
  auto ctx = c.NewContext();
  v1::TokenizeRequest request;
  request.set_text(flags.Get("prompt"));
  v1::TokenizeResponse response;
  RETURN_IF_ERROR(FromGrpc(stub->Tokenize(ctx.get(), request, &response)));
  out << absl::StrJoin(response.ids(), " ") << "\n";
  return absl::OkStatus();
}

absl::Status HealthRemote(const Connection& c, const Flags& flags, std::ostream& out) {
  auto stub = grpc::health::v1::Health::NewStub(c.channel);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(flags.Get("service"));
  ASSIGN_OR_RETURN(const double wait_s, flags.GetDouble("wait"));
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000));
  while (true) {  // once, or until SERVING or --wait seconds have passed
    auto ctx = c.NewContext();
    grpc::health::v1::HealthCheckResponse response;
    const absl::Status status = FromGrpc(stub->Check(ctx.get(), request, &response));
    const bool serving =
        status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (serving || std::chrono::steady_clock::now() >= deadline) {
      RETURN_IF_ERROR(status);
      const std::string name =
          grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
      out << name << "\n";
      if (!serving) return absl::UnavailableError(absl::StrCat("the server reports ", name));
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace lensd
