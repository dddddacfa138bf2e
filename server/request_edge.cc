#include "server/request_edge.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "server/request_wire.h"
#include "server/sae_wire.h"

namespace lensd {

absl::Status CheckKvFits(int tokens, const std::string& what, const ModelFacts& model) {
  if (model.kv_tokens > 0 && tokens > model.kv_tokens) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, " needs ", tokens, " tokens of KV cache; this server holds ",
                     model.kv_tokens, " (raise --kv-tokens or --gpu-memory-fraction)"));
  }
  return absl::OkStatus();
}

namespace {

// A capture prompt runs whole in one step, beside up to max_running decode tokens; the prompts
// of a request with patches all run in the same step (and hold their KV blocks together).
absl::Status CheckActivationsFit(const CaptureRequest& r, const ModelFacts& model,
                                 const ServerLimits& limits) {
  std::vector<int64_t> steps;
  for (const auto& ids : r.job.prompts) steps.push_back(static_cast<int64_t>(ids.size()));
  if (r.job.interventions && r.job.interventions->HasPatch()) {
    int64_t sum = 0;
    for (int64_t p : steps) sum += p;
    steps = {sum};
    RETURN_IF_ERROR(CheckKvFits(static_cast<int>(sum), "the prompts of a request with patches "
                                "(they run together)", model));
  }
  if (model.activation_budget <= 0) return absl::OkStatus();
  const bool maps = r.job.hooks.HasAttentionMaps();
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t p = steps[i];
    const int64_t need = StepActivationBytes(*model.config, limits.max_running + p, maps ? p : 0);
    if (need > model.activation_budget) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "prompts[", i, "] (", p, " tokens", maps ? ", with attention maps" : "",
          ") needs about ", need >> 20, " MiB of device activations in one step; this ",
          "server allows ", model.activation_budget >> 20, " MiB (--activation-mib)"));
    }
  }
  return absl::OkStatus();
}

// feature_top_k within 4096 and the d_sae of every SAE whose features are captured.
absl::Status CheckFeatureTopK(const CaptureRequest& r) {
  constexpr int kMaxTopK = 4096;
  if (r.feature_top_k < 0 || r.feature_top_k > kMaxTopK) {
    return absl::InvalidArgumentError(
        absl::StrCat("feature_top_k = ", r.feature_top_k, " is out of range [0, ", kMaxTopK, "]"));
  }
  for (HookId id : r.job.hooks.hooks()) {
    if (r.feature_top_k == 0 || !IsFeatureHook(id)) continue;
    const int64_t width = AttachedWidth(r.job.attachments, id);
    if (r.feature_top_k > width) {
      return absl::InvalidArgumentError(absl::StrCat("feature_top_k = ", r.feature_top_k,
                                                     " exceeds the ", width, " features of ",
                                                     HookName(id)));
    }
  }
  return absl::OkStatus();
}

// The returned dtype: unspecified = the model's; int32 is not a dtype for activations.
absl::StatusOr<DType> CaptureDType(v1::DType wire, const ModelFacts& model) {
  if (wire == v1::DTYPE_UNSPECIFIED) return model.dtype;
  absl::StatusOr<DType> d = FromWire(wire);
  if (!d.ok() || *d == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dtype = ", v1::DType_Name(wire), " is invalid: use FLOAT32, BFLOAT16 or FLOAT16"));
  }
  return d;
}

}  // namespace

int MaxPromptTokens(const ModelConfig& c, const ServerLimits& limits) {
  return limits.max_prompt_tokens > 0 ? std::min(limits.max_prompt_tokens, c.max_positions)
                                      : c.max_positions;
}

int64_t MaxPromptBytes(const ModelConfig& c, const ServerLimits& limits) {
  if (limits.max_prompt_bytes > 0) return limits.max_prompt_bytes;
  return int64_t{kPromptBytesPerToken} * MaxPromptTokens(c, limits);
}

absl::Status CheckTextSize(const std::string& text, const std::string& field, const ModelConfig& c,
                           const ServerLimits& limits) {
  const int64_t max_bytes = MaxPromptBytes(c, limits);
  if (static_cast<int64_t>(text.size()) <= max_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      field, " is ", text.size(), " bytes; this server tokenizes at most ", max_bytes,
      " (--max-prompt-bytes); send token ids or a shorter text"));
}

absl::StatusOr<std::vector<int32_t>> PromptTokens(const v1::Prompt& prompt, const std::string& field,
                                                  const ModelFacts& model,
                                                  const ServerLimits& limits) {
  const int vocab = model.config->vocab_size;
  std::vector<int32_t> ids;
  switch (prompt.kind_case()) {
    case v1::Prompt::KIND_NOT_SET:
      return absl::InvalidArgumentError(absl::StrCat(field, " is empty: set text or tokens"));
    case v1::Prompt::kText: {
      if (model.tokenizer == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat(field, ".text given but the model has no tokenizer; send tokens"));
      }
      RETURN_IF_ERROR(CheckTextSize(prompt.text(), field + ".text", *model.config, limits));
      absl::StatusOr<std::vector<int>> enc = model.tokenizer->Encode(prompt.text());
      if (!enc.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".text: ", enc.status().message()));
      }
      ids.assign(enc->begin(), enc->end());
      break;
    }
    case v1::Prompt::kTokens:
      RETURN_IF_ERROR(CheckTokenIds(prompt.tokens().ids(), vocab, field + ".tokens.ids"));
      ids.assign(prompt.tokens().ids().begin(), prompt.tokens().ids().end());
      break;
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " has no tokens"));
  const int max_tokens = MaxPromptTokens(*model.config, limits);
  if (static_cast<int>(ids.size()) > max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat(field, " has ", ids.size(),
                                                     " tokens; this server accepts at most ",
                                                     max_tokens));
  }
  return ids;
}

absl::StatusOr<Job> ToGenerateJob(const v1::GenerateRequest& request, const ModelFacts& model,
                                  const ServerLimits& limits) {
  Job job;
  job.kind = Job::Kind::kGenerate;
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, PromptTokens(request.prompt(), "prompt", model, limits));
  ASSIGN_OR_RETURN(job.sampling, ToSampling(request.sampling()));
  job.sampling.max_new_tokens = request.has_max_new_tokens() ? request.max_new_tokens() : 16;
  const int n = job.sampling.max_new_tokens;
  if (n < 1 || n > limits.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens = ", n, " is invalid: must be in [1, ",
                                                   limits.max_new_tokens, "]"));
  }
  const int total = std::min(static_cast<int>(ids.size()) + n, model.config->max_positions);
  RETURN_IF_ERROR(CheckKvFits(total, "prompt plus max_new_tokens", model));
  const int P = static_cast<int>(ids.size());
  ASSIGN_OR_RETURN(job.interventions, ToInterventionSet(request.interventions(), *model.config, {P},
                                                        true, total, limits.interventions));
  ASSIGN_OR_RETURN(job.attachments, ToAttachments(request.saes(), request.interventions(),
                                                  model.saes, {P}, true, total));
  RETURN_IF_ERROR(AttachmentSites(*model.config, job.attachments).status());
  job.prompts.push_back(std::move(ids));
  return job;
}

absl::StatusOr<HookSelection> ParseNamesFilter(
    const ModelConfig& c, const google::protobuf::RepeatedPtrField<std::string>& f,
    const std::vector<HookId>& sites) {
  if (f.empty()) return HookSelection::All(c, sites);
  absl::StatusOr<HookSelection> s = HookSelection::Parse(c, {f.begin(), f.end()}, sites);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("names_filter: ", s.status().message()));
  return s;
}

absl::StatusOr<CaptureRequest> ToCaptureRequest(const v1::RunWithCacheRequest& request,
                                                const ModelFacts& model,
                                                const ServerLimits& limits) {
  const ModelConfig& c = *model.config;
  CaptureRequest r;
  r.job.kind = Job::Kind::kCapture;
  if (request.prompts().empty()) return absl::InvalidArgumentError("prompts is empty");
  if (request.prompts_size() > limits.max_prompts) {
    return absl::InvalidArgumentError(absl::StrCat("prompts has ", request.prompts_size(),
                                                   " entries; at most ", limits.max_prompts));
  }
  for (int i = 0; i < request.prompts_size(); ++i) {
    const std::string field = absl::StrCat("prompts[", i, "]");
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, PromptTokens(request.prompts(i), field, model, limits));
    RETURN_IF_ERROR(CheckKvFits(static_cast<int>(ids.size()), field, model));
    r.job.prompts.push_back(std::move(ids));
  }
  std::vector<int> lengths;
  for (const auto& ids : r.job.prompts) lengths.push_back(static_cast<int>(ids.size()));
  ASSIGN_OR_RETURN(r.job.attachments,
                   ToAttachments(request.saes(), request.interventions(), model.saes, lengths));
  ASSIGN_OR_RETURN(const std::vector<HookId> sites, AttachmentSites(c, r.job.attachments));
  if (request.skip_hooks()) {
    r.job.hooks = HookSelection::None(c);
  } else {
    ASSIGN_OR_RETURN(r.job.hooks, ParseNamesFilter(c, request.names_filter(), sites));
  }
  r.feature_top_k = request.feature_top_k();
  RETURN_IF_ERROR(CheckFeatureTopK(r));
  r.job.want_logits = !request.skip_logits();
  if (request.has_position_slice()) {
    if (request.position_slice().has_start()) r.slice.start = request.position_slice().start();
    if (request.position_slice().has_stop()) r.slice.stop = request.position_slice().stop();
  }
  ASSIGN_OR_RETURN(r.dtype, CaptureDType(request.dtype(), model));
  ASSIGN_OR_RETURN(r.job.interventions, ToInterventionSet(request.interventions(), c, lengths, false,
                                                          0, limits.interventions));
  if (request.has_objective()) {
    if (!model.gradients.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("objective: ", model.gradients.message()));
    }
    if (r.job.interventions != nullptr) RETURN_IF_ERROR(r.job.interventions->CheckGradientRules());
    RETURN_IF_ERROR(CheckAttachmentGradients(r.job.attachments));
    ASSIGN_OR_RETURN(r.job.objective, ToObjective(request.objective(), c, lengths));
  }
  RETURN_IF_ERROR(CheckActivationsFit(r, model, limits));
  RETURN_IF_ERROR(BuildManifest(c, limits, r));
  return r;
}

absl::Status BuildManifest(const ModelConfig& c, const ServerLimits& limits, CaptureRequest& r) {
  for (int i = 0; i < static_cast<int>(r.job.prompts.size()); ++i) {
    const int64_t p = static_cast<int64_t>(r.job.prompts[i].size());
    const auto [b, e] = r.slice.Resolve(p);
    if (e <= b && !r.job.hooks.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("position_slice selects no position of prompts[",
                                                     i, "] (", p, " tokens)"));
    }
    for (HookId id : r.job.hooks.hooks()) {
      const Shape shape = WireShape(c, id, p, r.slice, r.job.attachments);
      if (r.feature_top_k > 0 && IsFeatureHook(id)) {
        const Shape top{1, shape[1], r.feature_top_k};
        r.manifest.push_back(
            {i, id, false, false, WireTensor::Part::kTopIndices, top, DType::kI32});
        r.manifest.push_back({i, id, false, false, WireTensor::Part::kTopValues, top, r.dtype});
        continue;
      }
      r.manifest.push_back({i, id, false, false, WireTensor::Part::kDense, shape, r.dtype});
    }
    if (r.job.want_logits) {
      r.manifest.push_back({i,
                            {HookPoint::kUnembedOut, -1},
                            true,
                            false,
                            WireTensor::Part::kDense,
                            {1, p, c.vocab_size},
                            r.dtype});
    }
    if (!r.job.objective.has_value()) continue;
    const std::vector<HookId>& hooks = r.job.hooks.hooks();
    for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) {  // as the backward reaches them
      if (!HasGradient(it->point)) continue;
      r.manifest.push_back(
          {i, *it, false, true, WireTensor::Part::kDense, WireShape(c, *it, p, r.slice), r.dtype});
    }
  }
  for (const WireTensor& t : r.manifest) r.total_bytes += t.NumBytes();
  if (r.total_bytes > limits.max_capture_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the requested capture is ", r.total_bytes, " bytes; this server allows ",
        limits.max_capture_bytes, " per request (select fewer hooks with names_filter, slice "
        "positions, use a 16-bit dtype, or send fewer prompts)"));
  }
  return absl::OkStatus();
}

v1::DType ToWire(DType dtype) {
  switch (dtype) {
    case DType::kF32: return v1::DTYPE_FLOAT32;
    case DType::kBF16: return v1::DTYPE_BFLOAT16;
    case DType::kF16: return v1::DTYPE_FLOAT16;
    case DType::kI32: return v1::DTYPE_INT32;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<DType> FromWire(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_FLOAT32: return DType::kF32;
    case v1::DTYPE_BFLOAT16: return DType::kBF16;
    case v1::DTYPE_FLOAT16: return DType::kF16;
    case v1::DTYPE_INT32: return DType::kI32;
    default: break;  // proto enums are open: unknown values arrive here
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", static_cast<int>(dtype)));
}

v1::FinishReason ToWire(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kContext: return v1::FINISH_REASON_CONTEXT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillTensorInfo(const WireTensor& t, v1::TensorInfo* info) {
  const char* part = t.part == WireTensor::Part::kTopIndices  ? ".top_indices"
                     : t.part == WireTensor::Part::kTopValues ? ".top_values"
                                                              : "";
  info->set_name(t.logits ? "logits" : t.grad ? HookName(t.id) + "_grad" : HookName(t.id) + part);
  info->set_prompt_index(t.prompt);
  info->set_layer(t.logits ? -1 : t.id.layer);
  info->set_dtype(ToWire(t.dtype));
  for (int i = 0; i < t.shape.rank; ++i) info->add_shape(t.shape[i]);
  info->set_num_bytes(t.NumBytes());
}

}  // namespace lensd
