// A loaded model: weights placed on one or more devices (pipeline split by layers), the
// paged KV pools, and the forward pass with hook points. Forward is not thread-safe; one
// caller (the scheduler thread or an offline command) drives it.
#ifndef LENSD_ENGINE_RUNTIME_MODEL_H_
#define LENSD_ENGINE_RUNTIME_MODEL_H_

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/backend/communicator.h"
#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "engine/model/weights.h"
#include "engine/runtime/attachments.h"
#include "engine/runtime/devices.h"
#include "engine/runtime/hooks.h"
#include "engine/runtime/interventions.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/memory_plan.h"
#include "engine/runtime/processing.h"

namespace lensd {

struct LoadOptions {
  std::string model_dir;             // empty: the built-in model
  // Tokenizer files (tokenizer.json, tokenizer.model or vocab.json + merges.txt) to use instead
  // of the model's own (a built-in model's is bytes); its ids must fit the model's vocabulary.
  std::string tokenizer_dir;
  // "auto" (every visible CUDA device, else the CPU), "cpu", "cpu:0,cpu:1,..." or
  // "cuda:0,cuda:1,..."
  std::string devices = "auto";
  std::string split;                 // "" / "transformer-lens", "memory", or explicit "0-1,2-3"
  // Storage of weight matrices and of the KV cache: float32, bfloat16 or float16 (GEMM inputs
  // rounded to it, float32 accumulation; K/V rounded when written); activations, norms and
  // biases stay float32.
  DType dtype = DType::kF32;
  // Storage of the KV cache when it should differ from `dtype` (K/V rounded when written;
  // captured hook_k / hook_v stay the computed values).
  std::optional<DType> kv_dtype;
  DType KvDType() const { return kv_dtype.value_or(dtype); }
  int tensor_parallel = 1;           // ranks per pipeline stage (consecutive devices)
  int offload_layers = 0;            // the last K layers stay in host memory, streamed in
  std::vector<int64_t> device_memory;  // per device bytes for --split=memory (virtual CPUs)
  ProcessingOptions processing;
  int block_size = 16;               // KV block size in tokens
  // KV capacity in tokens, shared by all sequences; 0: what the memory budget leaves after
  // the weights (CUDA, or --device-memory-mib), else 16384.
  int kv_tokens = 16384;
  // Share of each CUDA device's total memory that lensd may use (weights, KV, workspaces).
  double gpu_memory_fraction = 0.9;
  // Device memory kept from the KV cache for one step's activations (CUDA devices); the
  // server refuses work whose steps would need more (StepActivationBytes).
  int activation_mib = 2048;
  // Memory one gradient step may hold beyond its forward (GradientStepBytes); 0: a quarter
  // of the host's memory.
  int gradient_mib = 0;
  int threads = 0;                   // CPU compute threads per device; 0: one per hardware thread
  // Decode steps on a single CUDA device recorded once per batch size and replayed as CUDA
  // graphs (one launch per step instead of hundreds). Off by default until verified on
  // hardware; results are identical either way.
  bool cuda_graphs = false;
  // Tests: decorates each device's backend (e.g. to inject failures).
  std::function<std::unique_ptr<Backend>(std::unique_ptr<Backend>)> wrap_backend;
};

// One sequence's work in a forward step.
struct SeqInput {
  std::vector<int32_t> tokens;             // this step's tokens
  int start_pos = 0;                       // tokens of this sequence already in the KV cache
  const std::vector<int32_t>* block_table = nullptr;  // covers start_pos + tokens.size()
  bool all_logits = false;                 // logits for every token (else only the last)
  // The request's interventions (null: none) and this sequence's prompt index in it.
  // Sequences of one request share the set; a patch's source prompt must be in the batch.
  const InterventionSet* interventions = nullptr;
  int prompt_index = 0;
  // The request's attachments (null: none), run in the chain of their sites' hooks.
  const AttachmentList* attachments = nullptr;
  // The sequence's whole length for this forward (0: start_pos + tokens), which longrope's
  // frequencies follow: a chunk of a longer prompt passes the prompt's length.
  int context = 0;
  int Context() const {
    return context > 0 ? context : start_pos + static_cast<int>(tokens.size());
  }
};

struct ForwardResult {
  Buffer logits;                  // host [rows, V]
  std::vector<int> first_row;     // per sequence: its first row in `logits`
};

struct DeviceLayout {
  std::string name;
  int first_layer = 0;
  int end_layer = 0;
  size_t weight_bytes = 0;   // resident weights + offload slots
  size_t kv_bytes = 0;
  int offloaded_layers = 0;
  size_t offloaded_bytes = 0;  // host memory holding offloaded layers
};

// Block i -> device floor(i * n / L) (TransformerLens), or explicit "a-b,c-d" ranges.
absl::StatusOr<std::vector<std::pair<int, int>>> PlanSplit(const std::string& split,
                                                           int n_layers, int n_devices);

struct RankContext;
struct LayerInputs;

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(const LoadOptions& options);
  // Loads from any weight source (used by tests and the built-in model).
  static absl::StatusOr<std::unique_ptr<Model>> FromSource(const WeightSource& source,
                                                           const LoadOptions& options);
  ~Model();

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }  // of the weight matrices (LoadOptions::dtype)
  // Device bytes a step's activations may take (LoadOptions::activation_mib on CUDA devices);
  // 0: no limit (CPU devices use host memory).
  int64_t activation_budget() const { return activation_budget_; }
  // Bytes a gradient step may hold beyond its forward (LoadOptions::gradient_mib).
  int64_t gradient_budget() const { return gradient_budget_; }
  // nullptr when the model directory has no tokenizer.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  BlockAllocator& blocks() { return *blocks_; }
  std::vector<DeviceLayout> Devices() const;
  // The backends that run hook `id`: every tensor-parallel rank of the stage holding its layer
  // (model-level hooks: the first stage for the embedding's, the last for the head's).
  std::vector<Backend*> BackendsAt(HookId id) const;
  // The CPU GEMM kernel families in use ("" without CPU devices): results are bit-identical
  // across instruction sets of one family (engine/cpu/gemm.h).
  std::string CpuKernels() const;

  // Runs every sequence's tokens through the model, writing K/V into their blocks, calling
  // `hooks` (may be null) for captured points. Token ids must be < vocab and positions
  // < max_positions (InvalidArgument otherwise).
  absl::StatusOr<ForwardResult> Forward(const std::vector<SeqInput>& batch, HookSink* hooks);

  // Gradient of the returned logits, per sequence: `dlogits` [n, V] (host, zeroed) for the
  // sequence's logits `logits` [n, V] (host).
  using LogitsGradient = std::function<absl::Status(int seq, TensorView logits, float* dlogits)>;
  // Forward as Forward does (activations to `hooks`), then backward: `objective` gives each
  // sequence's logits gradient and `grads` receives N_grad under N's HookId for the hooks it
  // wants, the last layer's first (engine/runtime/blocks_backward.h). Whole prompts only
  // (start_pos 0, all_logits), without interventions or attachments, on one device whose
  // backend has gradient ops (FAILED_PRECONDITION / INVALID_ARGUMENT otherwise); each layer
  // is recomputed from its saved input, so memory is the residuals plus one layer.
  // Why this model cannot run ForwardBackward at all (FAILED_PRECONDITION), OK when it can.
  absl::Status GradientSupport() const;
  // `seed` (null: none): gradients an objective adds at a hook (HookSeed).
  absl::StatusOr<ForwardResult> ForwardBackward(const std::vector<SeqInput>& batch, HookSink* hooks,
                                                const LogitsGradient& objective, HookSink* grads,
                                                const HookSeed* seed = nullptr);

 private:
  struct Shard;
  struct Step;
  struct Placement;
  Model() = default;
  static absl::StatusOr<Placement> Place(const ModelConfig& c, const LoadOptions& options);
  absl::Status LoadShard(const WeightSource& source, const LoadOptions& options,
                         const Placement& p, int device);
  absl::Status LoadLayers(const WeightSource& source, const LoadOptions& options,
                          const Placement& p, Shard& shard);
  absl::Status Validate(const std::vector<SeqInput>& batch) const;
  // Forward after validation: the pipelined, graph or rank-parallel pass.
  ForwardResult ForwardDevices(const std::vector<SeqInput>& batch, HookSink* hooks);
  // Waits for every device's captures of the step.
  void FlushCaptures();
  // The residual's move between stages (Step::incoming): Send on the sending stage's thread,
  // Receive on the receiving one's.
  void SendResidual(Step& step, Shard& to, int to_stage);
  void ReceiveResidual(Step& step, Shard& to);
  void RunRank(Step& step);
  // This rank's view of `step` on `shard`'s device (blocks.h, step_hooks.h).
  RankContext ContextFor(Step& step, Shard& shard);
  // Embedding (stage 0) or the residual's move, the stage's blocks, the head (last stage).
  void RunStage(Step& step, int stage, int stages);
  ForwardResult MergeResults(const std::vector<Step>& steps) const;
  ForwardResult ForwardPipelined(const std::vector<SeqInput>& batch, HookSink* hooks, int stages);
  // Every tensor-parallel rank of every stage in turn (SPMD threads when tp_ > 1).
  ForwardResult ForwardRanks(const std::vector<SeqInput>& batch, HookSink* hooks);
  // The graph key of a decode step that may be replayed (LoadOptions::cuda_graphs, one
  // device, one token per sequence, no hooks, no offloaded layers); nullopt otherwise.
  std::optional<GraphKey> GraphKeyFor(const std::vector<SeqInput>& batch, HookSink* hooks) const;
  Shard& ShardAt(int stage, int rank) { return *shards_[stage * tp_ + rank]; }
  // Why ForwardBackward cannot run `batch` (its gradients to `grads`) on this model, or not
  // within gradient_budget() (OK when it can).
  absl::Status CheckGradients(const std::vector<SeqInput>& batch, const HookSink* grads) const;
  // What layer `layer`'s math reads on `shard` (which holds it).
  LayerInputs InputsOf(Shard& shard, int layer);
  // ForwardBackward's halves: the objective's gradient of every row's logits (on the device),
  // and the backward walk from the head (`x`: the final residual) down to the embedding,
  // each layer recomputed from its kept input (`inputs`, freed as it goes).
  absl::StatusOr<Buffer> LogitsGradientOf(const std::vector<SeqInput>& batch,
                                          const ForwardResult& result,
                                          const LogitsGradient& objective);
  void Backward(const std::vector<SeqInput>& batch, HookSink* grads, const HookSeed* seed,
                const ForwardResult& result, Buffer dlogits, TensorView x,
                std::vector<Buffer>& inputs);

  ModelConfig config_;
  DType dtype_ = DType::kF32;
  int64_t activation_budget_ = 0;
  int64_t gradient_budget_ = 0;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<BlockAllocator> blocks_;
  std::vector<std::unique_ptr<Shard>> shards_;  // [stage * tp_ + rank]
  int tp_ = 1;
  bool cuda_graphs_ = false;
  std::vector<std::unique_ptr<Communicator>> comms_;  // per stage, tp_ > 1
  std::mutex capture_mu_;  // serialises HookSink::Capture across devices' delivery threads
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_MODEL_H_
