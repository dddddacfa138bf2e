// Loading: plan the device split, stream weights layer by layer from the source through
// processing onto each device, allocate KV pools.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/core/status.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/model/hub_cache.h"
#include "engine/runtime/cuda_module.h"
#include "engine/runtime/model_internal.h"
#include "engine/runtime/tensor_parallel.h"

namespace lensd {
namespace {

// Device memory a CUDA device needs beyond weights, KV cache and activations: the GEMM
// workspace (32 MiB), the capture ring (256 MiB), the graph arena (256 MiB), staging and
// CUDA's own allocations.
constexpr int64_t kCudaWorkspaces = int64_t{768} << 20;
// KV capacity where no memory budget sizes it (CPU devices without --device-memory-mib).
constexpr int kDefaultKvTokens = 16384;
// What a memory split assumes for the KV cache when the cache is sized from what is left.
constexpr int kPlanningKvTokens = 4096;

// The host's physical memory.
int64_t HostMemoryBytes() { return int64_t{::sysconf(_SC_PHYS_PAGES)} * ::sysconf(_SC_PAGESIZE); }

// Bytes per pipeline stage that weights and KV cache may use: on CUDA, the device's free
// memory up to `fraction` of its total, less workspaces and the activation budget; on virtual
// CPU devices, host memory shared evenly between the stages.

absl::StatusOr<std::vector<int64_t>> StageCapacity(const std::vector<DeviceSpec>& devices, int tp,
                                                   double fraction, int64_t activation_bytes) {
  const int stages = static_cast<int>(devices.size()) / tp;
  const int64_t host = HostMemoryBytes();
  std::vector<int64_t> out;
  for (int s = 0; s < stages; ++s) {
    const DeviceSpec& d = devices[s * tp];
    if (d.cuda) {
      ASSIGN_OR_RETURN(auto info, LoadCudaMemoryInfo(d.index));
      const auto [free, total] = info;
      out.push_back(std::min<int64_t>(free, static_cast<int64_t>(fraction * total)) -
                    kCudaWorkspaces - activation_bytes);
      continue;
    }
    out.push_back(host / stages);
  }
  return out;
}

// inv_freq[i] = theta^(-2i/r), with Hugging Face's linear, llama3 and longrope rescaling;
// longrope: the short set, then the long set ([2, r/2]).
std::vector<float> RopeInvFreq(const RopeConfig& rope) {
  const int half = rope.rotary_dim / 2;
  const bool longrope = rope.type == RopeType::kLongRope;
  std::vector<float> out(longrope ? 2 * half : half);
  for (int i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(rope.theta, 2.0 * i / rope.rotary_dim);
    if (longrope) {
      out[i] = static_cast<float>(f / rope.short_factor[i]);
      out[half + i] = static_cast<float>(f / rope.long_factor[i]);
      continue;
    }
    if (rope.type == RopeType::kLinear) f /= rope.factor;
    if (rope.type == RopeType::kLlama3) {
      const double low_wavelen = rope.original_max_position / rope.low_freq_factor;
      const double high_wavelen = rope.original_max_position / rope.high_freq_factor;
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f /= rope.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (rope.original_max_position / wavelen - rope.low_freq_factor) /
                              (rope.high_freq_factor - rope.low_freq_factor);
        f = (1 - smooth) * f / rope.factor + smooth * f;
      }
    }
    out[i] = static_cast<float>(f);
  }
  return out;
}

// `matrix`: a weight only Linear reads (every rank-2 tensor but the embedding tables).
absl::StatusOr<Buffer> ToDevice(Backend& b, const Buffer& host, DType dtype, size_t& bytes,
                                bool matrix = true) {
  if (host.empty()) return Buffer();
  const DType stored = StorageDType(host.shape(), dtype);
  if (matrix && host.shape().rank == 2) {
    ASSIGN_OR_RETURN(Buffer d, b.AllocateMatrix(stored, host.shape()));
    b.UploadMatrix(host.As<float>(), d.view());
    bytes += d.NumBytes();
    return d;
  }
  ASSIGN_OR_RETURN(Buffer d, b.Allocate(stored, host.shape()));
  b.Upload(host.As<float>(), d.view());
  bytes += d.NumBytes();
  return d;
}

#define LENSD_UPLOAD_(field) ASSIGN_OR_RETURN(dst.field, ToDevice(b, src.field, dtype, bytes))

absl::StatusOr<LayerWeights> UploadLayer(Backend& b, const LayerWeights& src, DType dtype,
                                         size_t& bytes) {
  LayerWeights dst;
  for (const LayerTensorSpec& t : LayerTensorSpecs()) {
    const LayerTensor field = t.field;
    ASSIGN_OR_RETURN(dst.*field, ToDevice(b, src.*field, dtype, bytes));
  }
  return dst;
}

absl::StatusOr<EmbedWeights> UploadEmbed(Backend& b, const EmbedWeights& src, DType dtype,
                                         size_t& bytes) {
  EmbedWeights dst;  // tables for Gather, not matrices
  ASSIGN_OR_RETURN(dst.w_e, ToDevice(b, src.w_e, dtype, bytes, /*matrix=*/false));
  ASSIGN_OR_RETURN(dst.w_pos, ToDevice(b, src.w_pos, dtype, bytes, /*matrix=*/false));
  return dst;
}

absl::StatusOr<HeadWeights> UploadHead(Backend& b, const HeadWeights& src, DType dtype,
                                       size_t& bytes) {
  HeadWeights dst;
  LENSD_UPLOAD_(lnf_w);
  LENSD_UPLOAD_(lnf_b);
  LENSD_UPLOAD_(w_u);
  LENSD_UPLOAD_(b_u);
  return dst;
}

#undef LENSD_UPLOAD_

}  // namespace

absl::StatusOr<std::vector<std::pair<int, int>>> PlanSplit(const std::string& split, int n_layers,
                                                           int n_devices) {
  std::vector<std::pair<int, int>> ranges;
  if (split.empty() || split == "transformer-lens") {
    if (n_devices > n_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat(n_devices, " devices for ", n_layers, " layers: a device would be empty"));
    }
    for (int d = 0; d < n_devices; ++d) ranges.emplace_back(n_layers, 0);
    for (int i = 0; i < n_layers; ++i) {
      auto& r = ranges[static_cast<int64_t>(i) * n_devices / n_layers];
      r.first = std::min(r.first, i);
      r.second = std::max(r.second, i + 1);
    }
    return ranges;
  }
  int next = 0;
  for (absl::string_view part : absl::StrSplit(split, ',')) {
    std::vector<absl::string_view> ab = absl::StrSplit(part, '-');
    int a, b;
    if (ab.size() != 2 || !absl::SimpleAtoi(ab[0], &a) || !absl::SimpleAtoi(ab[1], &b) ||
        a != next || b < a) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad --split '", split, "': expected consecutive ranges like 0-9,10-31 starting at 0"));
    }
    ranges.emplace_back(a, b + 1);
    next = b + 1;
  }
  if (next != n_layers || static_cast<int>(ranges.size()) != n_devices) {
    return absl::InvalidArgumentError(absl::StrCat("--split '", split, "' must cover layers 0-",
                                                   n_layers - 1, " in ", n_devices, " ranges"));
  }
  return ranges;
}

namespace {

// LoadOptions::tokenizer_dir's tokenizer, whose ids must all be ids of the model.
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFrom(const std::string& dir,
                                                         const ModelConfig& c) {
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(dir));
  if (tokenizer->VocabSize() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tokenizer ", dir, ": its ", tokenizer->VocabSize(), " tokens do not fit the model's "
        "vocabulary of ", c.vocab_size));
  }
  spdlog::info("tokenizer from {}", dir);
  return tokenizer;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const LoadOptions& options) {
  absl::string_view builtin = options.model_dir;
  std::unique_ptr<Model> model;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = absl::NotFoundError("no tokenizer");
  if (options.model_dir.empty() || absl::ConsumePrefix(&builtin, "builtin:")) {
    const std::string name = builtin.empty() ? "tiny" : std::string(builtin);
    ASSIGN_OR_RETURN(ModelConfig config, BuiltinConfigNamed(name));
    spdlog::info("loading the built-in model '{}' (deterministic random weights)", name);
    auto source = MakeRandomSource(config, 0x1e45d);
    ASSIGN_OR_RETURN(model, FromSource(*source, options));
    tokenizer = MakeByteTokenizer();  // bytes, whatever the model's shape
  } else {
    ASSIGN_OR_RETURN(const std::string dir,
                     ResolveModelDir(options.model_dir, HubEnvironment::FromProcess()));
    if (dir != options.model_dir) spdlog::info("model {}: {}", options.model_dir, dir);
    ASSIGN_OR_RETURN(auto source, OpenCheckpointSource(dir));
    if (options.tokenizer_dir.empty()) tokenizer = LoadTokenizer(dir);
    if (!tokenizer.ok() && !absl::IsNotFound(tokenizer.status())) return tokenizer.status();
    ASSIGN_OR_RETURN(model, FromSource(*source, options));
  }
  if (!options.tokenizer_dir.empty()) {
    ASSIGN_OR_RETURN(tokenizer, TokenizerFrom(options.tokenizer_dir, model->config()));
  }
  if (tokenizer.ok()) model->tokenizer_ = std::move(*tokenizer);
  return model;
}

// Where everything goes: validated devices, stages, layer ranges, offloaded layers, KV size.
struct Model::Placement {
  std::vector<DeviceSpec> devices;
  bool cuda = false;  // some device is a GPU
  int tp = 1, stages = 1, offload = 0, num_blocks = 0;
  std::vector<std::pair<int, int>> ranges;  // per stage
  Shape pool_shape;                         // one layer's K (or V) pool on one rank
};

namespace {

// --split=memory, offloading the fewest last layers that make the weights fit when
// --offload-layers is not given.
// Each stage's bytes for weights and KV cache: --device-memory-mib as given, else
// StageCapacity.
absl::StatusOr<std::vector<int64_t>> StageBudgets(const LoadOptions& o,
                                                  const std::vector<DeviceSpec>& devices, int tp) {
  const size_t stages = devices.size() / tp;
  std::vector<int64_t> budget = o.device_memory;
  if (budget.empty()) {
    ASSIGN_OR_RETURN(budget, StageCapacity(devices, tp, o.gpu_memory_fraction,
                                           int64_t{o.activation_mib} << 20));
  }
  if (budget.size() != stages) {
    return absl::InvalidArgumentError(absl::StrCat("--device-memory lists ", budget.size(),
                                                   " sizes for ", stages, " pipeline stages"));
  }
  return budget;
}

absl::StatusOr<std::vector<std::pair<int, int>>> PlanMemoryWithOffload(
    const ModelConfig& c, const LoadOptions& options, const std::vector<DeviceSpec>& devices,
    int tp, int64_t kv_per_layer, int* offload) {
  ASSIGN_OR_RETURN(std::vector<int64_t> capacity, StageBudgets(options, devices, tp));
  absl::StatusOr<std::vector<std::pair<int, int>>> plan =
      PlanMemorySplit(c, kv_per_layer, capacity, *offload, options.dtype);
  while (absl::IsResourceExhausted(plan.status()) && options.offload_layers == 0 &&
         *offload < c.n_layers) {
    plan = PlanMemorySplit(c, kv_per_layer, capacity, ++*offload, options.dtype);
  }
  if (plan.ok() && *offload > options.offload_layers) {
    spdlog::info("weights do not fit the devices: offloading the last {} layers to host memory",
                 *offload);
  }
  return plan;
}

// The KV capacity in tokens: --kv-tokens, checked against the CUDA budget; or (0) the largest
// that every stage's budget — CUDA memory, or --device-memory-mib — leaves next to its
// weights; kDefaultKvTokens where no budget is known.
absl::StatusOr<int> SizeKv(const ModelConfig& c, const LoadOptions& o,
                           const std::vector<DeviceSpec>& devices, bool cuda, int tp,
                           const std::vector<std::pair<int, int>>& ranges, int offload) {
  if (o.kv_tokens > 0 && !cuda) return o.kv_tokens;
  if (o.device_memory.empty() && !cuda) return kDefaultKvTokens;
  ASSIGN_OR_RETURN(std::vector<int64_t> budget, StageBudgets(o, devices, tp));
  ASSIGN_OR_RETURN(int fit,
                   KvTokensForBudget(c, o.dtype, tp, ranges, budget, offload, o.block_size,
                                     o.KvDType()));
  if (o.kv_tokens == 0) {
    spdlog::info("KV cache: {} tokens (what the memory budget leaves after the weights)", fit);
    return fit;
  }
  if (o.kv_tokens > fit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--kv-tokens ", o.kv_tokens, " does not fit: the memory budget leaves room for ", fit,
        " (lower --kv-tokens, or raise --gpu-memory-fraction)"));
  }
  return o.kv_tokens;
}

// The options' own ranges (those that need no device).
// What mixtures of experts do not support yet, and the row alignment their stacked experts
// need (Backend::MatrixRows).
absl::Status CheckMoe(const ModelConfig& c, const LoadOptions& options) {
  if (!HasMoe(c)) return absl::OkStatus();
  // Centring writes per expert block of the stacked matrices; no LayerNorm mixture exists.
  if (options.processing.center_writing_weights && c.norm == NormKind::kLayerNorm) {
    return absl::UnimplementedError(
        absl::StrCat(c.model_type,
                     ": center_writing_weights of a LayerNorm mixture of experts is not "
                     "supported"));
  }
  for (const LayerSpec& l : c.layers) {
    if (l.mlp != MlpKind::kMoe) continue;
    if (c.d_model % kMatrixRowAlign != 0 || l.moe.d_expert % kMatrixRowAlign != 0) {
      return absl::UnimplementedError(absl::StrCat(
          c.model_type, ": mixture of experts needs d_model (", c.d_model,
          ") and the expert size (", l.moe.d_expert, ") to be multiples of ", kMatrixRowAlign));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLoadOptions(const ModelConfig& c, const LoadOptions& options) {
  for (DType d : {options.dtype, options.KvDType()}) {
    if (d != DType::kF32 && d != DType::kBF16 && d != DType::kF16) {
      return absl::InvalidArgumentError(
          "weights and KV cache must be float32, bfloat16 or float16");
    }
  }
  if (options.block_size <= 0 ||
      (options.kv_tokens != 0 && options.kv_tokens < options.block_size)) {
    return absl::InvalidArgumentError("KV capacity must hold at least one block");
  }
  if (!(options.gpu_memory_fraction > 0 && options.gpu_memory_fraction <= 1)) {
    return absl::InvalidArgumentError("--gpu-memory-fraction must be in (0, 1]");
  }
  if (options.gradient_mib < 0) {
    return absl::InvalidArgumentError("--gradient-mib must be >= 0 (0: a quarter of host memory)");
  }
  if (options.activation_mib < 1) {
    return absl::InvalidArgumentError("--activation-mib must be >= 1");
  }
  if (options.offload_layers < 0 || options.offload_layers > c.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--offload-layers must be in [0, ", c.n_layers, "]"));
  }
  return CheckMoe(c, options);
}

}  // namespace

absl::StatusOr<Model::Placement> Model::Place(const ModelConfig& c, const LoadOptions& options) {
  RETURN_IF_ERROR(CheckLoadOptions(c, options));
  Placement p;
  ASSIGN_OR_RETURN(p.devices, ParseDevices(options.devices));
  p.cuda = std::any_of(p.devices.begin(), p.devices.end(), [](auto& d) { return d.cuda; });
  p.tp = options.tensor_parallel;
  RETURN_IF_ERROR(CheckTensorParallel(c, p.tp));
  if (p.devices.size() % p.tp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--tensor-parallel ", p.tp, " must divide the ",
                                                   p.devices.size(), " devices"));
  }
  p.stages = static_cast<int>(p.devices.size()) / p.tp;
  p.offload = options.offload_layers;
  if (options.split == "memory") {
    const int64_t planned = options.kv_tokens > 0 ? options.kv_tokens : kPlanningKvTokens;
    const int64_t kv_per_layer =
        2 * planned * c.n_kv_heads * c.d_head *
        static_cast<int64_t>(DTypeSize(options.KvDType()));
    ASSIGN_OR_RETURN(p.ranges, PlanMemoryWithOffload(c, options, p.devices, p.tp, kv_per_layer,
                                                     &p.offload));
  } else {
    ASSIGN_OR_RETURN(p.ranges, PlanSplit(options.split, c.n_layers, p.stages));
  }
  ASSIGN_OR_RETURN(int kv_tokens,
                   SizeKv(c, options, p.devices, p.cuda, p.tp, p.ranges, p.offload));
  p.num_blocks = kv_tokens / options.block_size;
  p.pool_shape = {int64_t{p.num_blocks} * options.block_size, KvHeadsPerRank(c, p.tp), c.d_head};
  return p;
}

absl::Status Model::LoadLayers(const WeightSource& source, const LoadOptions& options,
                               const Placement& p, Shard& shard) {
  Backend& b = *shard.backend;
  for (int layer = shard.first; layer < shard.end; ++layer) {
    ASSIGN_OR_RETURN(LayerWeights w, source.Layer(layer));
    ProcessLayer(config_, options.processing, w);
    if (p.tp > 1) w = SliceLayer(config_, layer, w, shard.rank, p.tp);
    if (layer >= config_.n_layers - p.offload) {
      shard.layers.AddOffloaded(std::move(w));
    } else {
      ASSIGN_OR_RETURN(LayerWeights dw, UploadLayer(b, w, options.dtype, shard.weight_bytes));
      shard.layers.AddResident(std::move(dw));
    }
    ASSIGN_OR_RETURN(Buffer k, b.Allocate(options.KvDType(), p.pool_shape));
    ASSIGN_OR_RETURN(Buffer v, b.Allocate(options.KvDType(), p.pool_shape));
    shard.kv_bytes += k.NumBytes() + v.NumBytes();
    shard.k_pool.push_back(std::move(k));
    shard.v_pool.push_back(std::move(v));
    spdlog::info("{}: layer {} of {} loaded", b.Name(), layer, config_.n_layers);
  }
  RETURN_IF_ERROR(shard.layers.AllocateSlots(b, options.dtype));
  shard.weight_bytes += shard.layers.slot_bytes();
  return absl::OkStatus();
}

absl::Status Model::LoadShard(const WeightSource& source, const LoadOptions& options,
                              const Placement& p, int device) {
  const ModelConfig& c = config_;
  const int stage = device / p.tp, rank = device % p.tp;
  auto shard = std::make_unique<Shard>();
  ASSIGN_OR_RETURN(shard->backend, MakeBackend(p.devices[device], options.threads));
  if (options.wrap_backend) shard->backend = options.wrap_backend(std::move(shard->backend));
  Backend& b = *shard->backend;
  shard->first = p.ranges[stage].first, shard->end = p.ranges[stage].second;
  shard->rank = rank;
  if (p.tp > 1) shard->comm = comms_[stage].get();
  shard->n_heads = c.n_heads / p.tp, shard->n_kv_heads = KvHeadsPerRank(c, p.tp);
  shard->d_mlp = c.d_mlp / p.tp;
  if (stage == 0) {
    ASSIGN_OR_RETURN(EmbedWeights e, source.Embed());
    ProcessEmbed(c, options.processing, e);
    ASSIGN_OR_RETURN(shard->embed, UploadEmbed(b, e, options.dtype, shard->weight_bytes));
  }
  RETURN_IF_ERROR(LoadLayers(source, options, p, *shard));
  if (stage + 1 == p.stages && rank == 0) {  // logits are computed once, on rank 0
    ASSIGN_OR_RETURN(HeadWeights h, source.Head());
    ProcessHead(c, options.processing, h);
    ASSIGN_OR_RETURN(shard->head, UploadHead(b, h, options.dtype, shard->weight_bytes));
  }
  for (int l = shard->first; l < shard->end && !c.learned_positions; ++l) {
    std::vector<float> inv = RopeInvFreq(c.layers[l].rope);
    const int64_t half = c.layers[l].rope.rotary_dim / 2;
    const Shape shape = static_cast<int64_t>(inv.size()) == half ? Shape{half} : Shape{2, half};
    ASSIGN_OR_RETURN(Buffer freq, b.Allocate(DType::kF32, shape));
    b.Upload(inv.data(), freq.view());
    shard->inv_freq.push_back(std::move(freq));
  }
  spdlog::info("{}: layers {}-{} loaded, {:.1f} MiB weights, {:.1f} MiB KV, {} layers "
               "({:.1f} MiB) offloaded to host memory", b.Name(), shard->first, shard->end - 1,
               shard->weight_bytes / 1048576.0, shard->kv_bytes / 1048576.0,
               shard->layers.offloaded(), shard->layers.host_bytes() / 1048576.0);
  shards_.push_back(std::move(shard));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromSource(const WeightSource& source,
                                                         const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const ModelConfig& c = source.config();
  if (static_cast<int>(c.layers.size()) != c.n_layers) {  // a config built by hand, not parsed
    return absl::InvalidArgumentError(absl::StrCat("the config has ", c.n_layers, " layers but ",
                                                   c.layers.size(), " layer specs"));
  }
  ASSIGN_OR_RETURN(Placement p, Place(c, options));
  std::unique_ptr<Model> m(new Model());
  m->config_ = c;
  m->dtype_ = options.dtype;
  m->cuda_graphs_ = options.cuda_graphs;
  if (p.cuda) m->activation_budget_ = int64_t{options.activation_mib} << 20;
  m->gradient_budget_ =
      options.gradient_mib > 0 ? int64_t{options.gradient_mib} << 20 : HostMemoryBytes() / 4;
  m->tp_ = p.tp;
  if (p.tp > 1) {
    for (int s = 0; s < p.stages; ++s) {
      ASSIGN_OR_RETURN(auto comm, MakeStageCommunicator(p.devices, s, p.tp));
      m->comms_.push_back(std::move(comm));
    }
  }
  m->blocks_ = std::make_unique<BlockAllocator>(p.num_blocks, options.block_size);
  for (int d = 0; d < static_cast<int>(p.devices.size()); ++d) {
    RETURN_IF_ERROR(m->LoadShard(source, options, p, d));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("model {} loaded: {} layers, d_model {}, vocab {}, {} weights, in {:.2f} s",
               c.model_type, c.n_layers, c.d_model, c.vocab_size, DTypeName(options.dtype),
               secs);
  if (!m->CpuKernels().empty()) spdlog::info("CPU kernels: {}", m->CpuKernels());
  return m;
}

Model::~Model() = default;

std::string Model::CpuKernels() const {
  for (const auto& shard : shards_) {
    if (shard->backend->Name().rfind("cpu", 0) == 0) return CpuKernelFamilies();
  }
  return "";
}

std::vector<Backend*> Model::BackendsAt(HookId id) const {
  const bool embedding = id.point == HookPoint::kEmbed || id.point == HookPoint::kPosEmbed;
  const int layer = id.layer >= 0 ? id.layer : embedding ? 0 : config_.n_layers - 1;
  std::vector<Backend*> out;
  for (const auto& s : shards_) {
    if (layer >= s->first && layer < s->end) out.push_back(s->backend.get());
  }
  return out;
}

std::vector<DeviceLayout> Model::Devices() const {
  std::vector<DeviceLayout> out;
  for (const auto& s : shards_) {
    out.push_back({s->backend->Name(), s->first, s->end, s->weight_bytes, s->kv_bytes,
                   s->layers.offloaded(), s->layers.host_bytes()});
  }
  return out;
}

}  // namespace lensd
