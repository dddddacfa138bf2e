// The RPC edge: turns v1 request messages into validated domain structs (server/job.h) once,
// with INVALID_ARGUMENT / RESOURCE_EXHAUSTED / FAILED_PRECONDITION messages that name the
// offending field. Also the mappings between engine and wire enums.
#ifndef LENSD_SERVER_REQUEST_EDGE_H_
#define LENSD_SERVER_REQUEST_EDGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/model.h"
#include "engine/runtime/sae.h"
#include "lensd/v1/lensd.pb.h"
#include "server/interventions_wire.h"
#include "server/job.h"
#include "server/request_wire.h"
#include "server/wire.h"

namespace lensd {

// Text is refused above this many bytes per token of the prompt limit, before tokenizing:
// tokenizing costs server CPU in proportion to the bytes (GPT-2 averages ~4 bytes per token).
inline constexpr int kPromptBytesPerToken = 16;

struct ServerLimits {
  int max_prompt_tokens = 0;   // 0: the model's max_positions
  int64_t max_prompt_bytes = 0;  // text prompts and Tokenize; 0: kPromptBytesPerToken per token
  int max_new_tokens = 4096;
  int64_t max_capture_bytes = int64_t{4} << 30;
  int max_prompts = 256;       // per RunWithCache request
  int max_running = 64;        // decode tokens that may share a step with a capture prompt
  InterventionLimits interventions;
};

// What a model offers the edge: config, tokenizer (may be null), weight dtype (the default
// dtype of captures), KV cache capacity and a step's activation budget (requests needing
// more are refused; 0: unchecked).
struct ModelFacts {
  const ModelConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;
  DType dtype = DType::kF32;
  int kv_tokens = 0;
  int64_t activation_budget = 0;
  absl::Status gradients;  // why this model computes no gradients (OK: it does)
  const SaeSet* saes = nullptr;  // loaded SAEs (null: none)
};

// One tensor a RunWithCache stream will carry.
struct WireTensor {
  int prompt = 0;
  HookId id{HookPoint::kEmbed, -1};
  bool logits = false;
  bool grad = false;  // the hook's gradient, "<name>_grad"
  // An SAE's feature activations sent sparse (CaptureRequest::feature_top_k): their indices
  // "<name>.top_indices" or values "<name>.top_values".
  enum class Part { kDense, kTopIndices, kTopValues };
  Part part = Part::kDense;
  Shape shape;
  DType dtype = DType::kF32;
  int64_t NumBytes() const { return shape.NumElements() * static_cast<int64_t>(DTypeSize(dtype)); }
};

struct CaptureRequest {
  Job job;  // kind kCapture; sink and deadline are filled in by the caller
  PositionSlice slice;
  DType dtype = DType::kF32;
  std::vector<WireTensor> manifest;  // per prompt: hooks in forward order, then logits
  int64_t total_bytes = 0;
  int feature_top_k = 0;  // > 0: SAE feature activations as top-k indices + values
};

// RESOURCE_EXHAUSTED when `tokens` exceed the whole KV cache ("<what> needs ...").
absl::Status CheckKvFits(int tokens, const std::string& what, const ModelFacts& model);
// The longest prompt accepted: --max-prompt-tokens capped by the model's context.
int MaxPromptTokens(const ModelConfig& c, const ServerLimits& limits);
int64_t MaxPromptBytes(const ModelConfig& c, const ServerLimits& limits);
// RESOURCE_EXHAUSTED naming `field` when `text` is longer than MaxPromptBytes; checked before
// any tokenizing.
absl::Status CheckTextSize(const std::string& text, const std::string& field, const ModelConfig& c,
                           const ServerLimits& limits);
absl::StatusOr<std::vector<int32_t>> PromptTokens(const v1::Prompt& prompt, const std::string& field,
                                                  const ModelFacts& model,
                                                  const ServerLimits& limits);
absl::StatusOr<Job> ToGenerateJob(const v1::GenerateRequest& request, const ModelFacts& model,
                                  const ServerLimits& limits);
absl::StatusOr<CaptureRequest> ToCaptureRequest(const v1::RunWithCacheRequest& request,
                                                const ModelFacts& model,
                                                const ServerLimits& limits);
// Fills r.manifest and r.total_bytes from r.job's prompts, hooks and logits, r.slice and
// r.dtype; INVALID_ARGUMENT for an empty slice, RESOURCE_EXHAUSTED over the byte budget.
absl::Status BuildManifest(const ModelConfig& c, const ServerLimits& limits, CaptureRequest& r);
// `sites`: where the request attaches SAEs (their hooks are selectable too).
absl::StatusOr<HookSelection> ParseNamesFilter(
    const ModelConfig& c, const google::protobuf::RepeatedPtrField<std::string>& f,
    const std::vector<HookId>& sites = {});

v1::DType ToWire(DType dtype);
absl::StatusOr<DType> FromWire(v1::DType dtype);
v1::FinishReason ToWire(FinishReason reason);
// Fills name, prompt_index, layer, dtype, shape, num_bytes.
void FillTensorInfo(const WireTensor& t, v1::TensorInfo* info);

}  // namespace lensd

#endif  // LENSD_SERVER_REQUEST_EDGE_H_
