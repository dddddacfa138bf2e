#include "engine/model/weights.h"

#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status.h"
#include "engine/model/family.h"
#include "engine/model/json_fields.h"

namespace lensd {
namespace {

Buffer HostF32(Shape s) { return Buffer::Host(DType::kF32, s); }

// Rows [begin, begin + n) of a row-major [rows, cols] matrix, copied.
Buffer SliceRows(const Buffer& m, int64_t begin, int64_t n) {
  int64_t cols = m.shape().NumElements() / m.shape()[0];
  Buffer out = HostF32(m.shape().rank == 1 ? Shape{n} : Shape{n, cols});
  std::memcpy(out.As<float>(), m.As<float>() + begin * cols, n * cols * 4);
  return out;
}

Buffer Transpose(const Buffer& m) {
  int64_t r = m.shape()[0], c = m.shape()[1];
  Buffer out = HostF32({c, r});
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t j = 0; j < c; ++j) out.As<float>()[j * r + i] = m.As<float>()[i * c + j];
  }
  return out;
}

// Reads a checkpoint through its family's tensor table (family.h).
class CheckpointSource : public WeightSource {
 public:
  CheckpointSource(ModelConfig c, const FamilySpec& family, std::unique_ptr<Checkpoint> ck)
      : config_(std::move(c)), family_(family), ck_(std::move(ck)) {}
  const ModelConfig& config() const override { return config_; }
  absl::StatusOr<EmbedWeights> Embed() const override;
  absl::StatusOr<LayerWeights> Layer(int layer) const override;
  absl::StatusOr<HeadWeights> Head() const override;

 private:
  // Reads `name` (under the family's nested prefix when the checkpoint has it there), checks
  // its shape and converts to float32.
  absl::StatusOr<Buffer> Read(const std::string& name, Shape expect) const;
  // A norm weight as the forward pass multiplies by it (FamilySpec::norm_weight_offset).
  void OffsetNormWeight(Buffer& w) const;
  // The experts' tensors of a kPerExpert row, stacked by rows into its one canonical tensor.
  absl::Status ReadExperts(int layer, const TensorSource& source, LayerWeights& w) const;
  // One table row: the checkpoint tensor, split into the canonical tensors it holds.
  absl::Status ReadSource(int layer, const TensorSource& source, LayerWeights& w) const;

  ModelConfig config_;
  const FamilySpec& family_;
  std::unique_ptr<Checkpoint> ck_;
};

absl::StatusOr<Buffer> CheckpointSource::Read(const std::string& name, Shape expect) const {
  std::string full = absl::StrCat(family_.nested_prefix, name);
  if (!ck_->Has(full) && ck_->Has(name)) full = name;
  ASSIGN_OR_RETURN(const TensorInfo* info, ck_->Get(full));
  Shape got = Shape::FromVector(info->shape);
  if (got != expect) {
    return absl::InvalidArgumentError(absl::StrCat(ck_->FileOf(full), ": tensor '", full,
                                                   "' has shape ", got.ToString(),
                                                   ", config implies ", expect.ToString()));
  }
  if (info->dtype == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(ck_->FileOf(full), ": tensor '", full,
                                                   "' is I32; weights must be F32/F16/BF16"));
  }
  Buffer out = HostF32(expect);
  ConvertToF32(info->dtype, info->data, out.As<float>(), expect.NumElements());
  ck_->Evict(full);
  return out;
}

void CheckpointSource::OffsetNormWeight(Buffer& w) const {
  if (family_.norm_weight_offset == 0.0f || w.empty()) return;
  for (int64_t i = 0; i < w.shape().NumElements(); ++i) {
    w.As<float>()[i] += family_.norm_weight_offset;
  }
}

absl::Status CheckpointSource::ReadExperts(int layer, const TensorSource& source,
                                           LayerWeights& w) const {
  const Shape all = LayerTensorShape(config_, layer, source.parts[0]);
  const int experts = config_.layers[layer].moe.experts;
  const Shape one{all[0] / experts, all[1]};
  const std::string name = absl::StrCat(family_.layer_prefix, layer, ".", source.name);
  const size_t at = name.find("{e}");
  Buffer& out = w.*source.parts[0];
  out = HostF32(all);
  for (int e = 0; e < experts; ++e) {
    ASSIGN_OR_RETURN(Buffer part, Read(std::string(name).replace(at, 3, absl::StrCat(e)), one));
    std::memcpy(out.As<float>() + e * one.NumElements(), part.As<float>(), part.NumBytes());
  }
  return absl::OkStatus();
}

absl::Status CheckpointSource::ReadSource(int layer, const TensorSource& source,
                                          LayerWeights& w) const {
  if (!HasLayerTensor(config_, layer, source.parts[0])) return absl::OkStatus();
  // Families mixing dense and expert layers list both names of their MLP matrices.
  const bool moe = config_.layers[layer].mlp == MlpKind::kMoe;
  const LayerTensor f = source.parts[0];
  const bool mlp_matrix =
      f == &LayerWeights::w_in || f == &LayerWeights::w_up || f == &LayerWeights::w_out;
  if (mlp_matrix && (source.layout == Layout::kPerExpert) != moe) return absl::OkStatus();
  if (source.layout == Layout::kPerExpert) return ReadExperts(layer, source, w);
  // The parts stacked by rows: [rows, cols], or [rows] for vectors.
  int64_t rows = 0;
  for (LayerTensor part : source.parts) rows += LayerTensorShape(config_, layer, part)[0];
  const Shape first = LayerTensorShape(config_, layer, source.parts[0]);
  const bool matrix = first.rank == 2;
  Shape stored = matrix ? Shape{rows, first[1]} : Shape{rows};
  if (matrix && source.layout == Layout::kConv1D) stored = {first[1], rows};
  const std::string name = absl::StrCat(family_.layer_prefix, layer, ".", source.name);
  ASSIGN_OR_RETURN(Buffer all, Read(name, stored));
  if (matrix && source.layout == Layout::kConv1D) all = Transpose(all);  // [rows, cols]
  if (source.parts.size() == 1) {
    w.*source.parts[0] = std::move(all);
    if (IsNormWeight(source.parts[0])) OffsetNormWeight(w.*source.parts[0]);
    return absl::OkStatus();
  }
  if (source.layout != Layout::kHeadInterleaved) {
    int64_t begin = 0;
    for (LayerTensor part : source.parts) {
      const int64_t n = LayerTensorShape(config_, layer, part)[0];
      w.*part = SliceRows(all, begin, n);
      begin += n;
    }
    return absl::OkStatus();
  }
  // Rows [heads, parts, d_head]: head h's rows of part p follow its rows of part p - 1.
  const int64_t parts = static_cast<int64_t>(source.parts.size()), dh = config_.d_head;
  const int64_t heads = rows / (parts * dh), row = matrix ? first[1] : 1;
  for (int64_t p = 0; p < parts; ++p) {
    Buffer& out = w.*source.parts[p];
    out = HostF32(LayerTensorShape(config_, layer, source.parts[p]));
    for (int64_t h = 0; h < heads; ++h) {
      std::memcpy(out.As<float>() + h * dh * row, all.As<float>() + (h * parts + p) * dh * row,
                  static_cast<size_t>(dh * row) * 4);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EmbedWeights> CheckpointSource::Embed() const {
  const auto& c = config_;
  EmbedWeights e;
  ASSIGN_OR_RETURN(e.w_e, Read(family_.embed, {c.vocab_size, c.d_model}));
  if (!family_.position_embed.empty()) {
    ASSIGN_OR_RETURN(e.w_pos, Read(family_.position_embed, {c.max_positions, c.d_model}));
  }
  return e;
}

absl::StatusOr<HeadWeights> CheckpointSource::Head() const {
  const auto& c = config_;
  HeadWeights h;
  const Shape d{c.d_model};
  const std::string norm = family_.final_norm;
  ASSIGN_OR_RETURN(h.lnf_w, Read(norm + ".weight", d));
  OffsetNormWeight(h.lnf_w);
  if (c.norm == NormKind::kLayerNorm) {
    ASSIGN_OR_RETURN(h.lnf_b, Read(norm + ".bias", d));
  }
  const bool tied = c.tied_embeddings || !ck_->Has(family_.unembed);
  ASSIGN_OR_RETURN(h.w_u, Read(tied ? family_.embed : family_.unembed, {c.vocab_size, c.d_model}));
  return h;
}

absl::StatusOr<LayerWeights> CheckpointSource::Layer(int layer) const {
  LayerWeights w;
  for (const TensorSource& source : family_.layer) RETURN_IF_ERROR(ReadSource(layer, source, w));
  return w;
}

class RandomSource : public WeightSource {
 public:
  RandomSource(ModelConfig c, uint64_t seed) : config_(std::move(c)), seed_(seed) {}
  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<EmbedWeights> Embed() const override {
    EmbedWeights e;
    e.w_e = Normal({config_.vocab_size, config_.d_model}, 1.0, 1);
    if (config_.learned_positions) e.w_pos = Normal({config_.max_positions, config_.d_model}, 0.1, 2);
    return e;
  }

  absl::StatusOr<LayerWeights> Layer(int layer) const override {
    const uint64_t streams = 100 + layer * 32;
    LayerWeights w;
    for (const LayerTensorSpec& t : LayerTensorSpecs()) {
      if (!HasLayerTensor(config_, layer, t.field)) continue;
      const Shape shape = LayerTensorShape(config_, layer, t.field);
      const uint64_t stream = streams + t.random_stream;
      switch (t.init) {
        case RandomInit::kNormWeight:
          w.*t.field = Normal(shape, 0.1, stream, 1.0);
          break;
        case RandomInit::kBias:
          w.*t.field = Normal(shape, 0.02, stream);
          break;
        case RandomInit::kFanIn:
          w.*t.field = Normal(shape, 1.0 / std::sqrt(static_cast<double>(shape[1])), stream);
          break;
      }
    }
    return w;
  }

  absl::StatusOr<HeadWeights> Head() const override {
    HeadWeights h;
    h.lnf_w = Normal({config_.d_model}, 0.1, 3, 1.0);
    if (config_.norm == NormKind::kLayerNorm) h.lnf_b = Normal({config_.d_model}, 0.02, 4);
    h.w_u = Normal({config_.vocab_size, config_.d_model}, 1.0 / std::sqrt(config_.d_model), 5);
    return h;
  }

 private:
  Buffer Normal(Shape s, double stddev, uint64_t stream, double mean = 0.0) const {
    std::mt19937_64 rng(seed_ * 1000003 + stream);
    std::normal_distribution<float> dist(static_cast<float>(mean), static_cast<float>(stddev));
    Buffer b = HostF32(s);
    for (int64_t i = 0; i < s.NumElements(); ++i) b.As<float>()[i] = dist(rng);
    return b;
  }
  ModelConfig config_;
  uint64_t seed_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpointSource(const std::string& dir,
                                                                   const FamilySpec& family) {
  const std::string path = dir + "/config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfigAs(text, path, &family));
  ASSIGN_OR_RETURN(auto ck, Checkpoint::Open(dir));
  return std::unique_ptr<WeightSource>(
      new CheckpointSource(std::move(config), family, std::move(ck)));
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpointSource(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir + "/config.json"));
  return OpenCheckpointSource(dir, *FindFamily(config.model_type));  // parsing found it
}

std::unique_ptr<WeightSource> MakeRandomSource(const ModelConfig& config, uint64_t seed) {
  return std::make_unique<RandomSource>(config, seed);
}

namespace {

// A Llama-style layer: full rotary at `theta`, global attention, SwiGLU.
LayerSpec RotaryLayer(int d_head, double theta) {
  LayerSpec layer;
  layer.rope.theta = theta, layer.rope.rotary_dim = d_head;
  layer.attention.scale = DefaultAttentionScale(d_head);
  layer.mlp = MlpKind::kGated;
  return layer;
}

}  // namespace

ModelConfig BuiltinConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.d_model = 128, c.n_layers = 4, c.n_heads = 4, c.n_kv_heads = 2, c.d_head = 32;
  c.d_mlp = 344, c.vocab_size = 259, c.max_positions = 2048;
  c.norm = NormKind::kRmsNorm, c.norm_eps = 1e-5, c.act = ActKind::kSilu;
  c.bos_id = 1, c.eos_ids = {2};
  SetUniformLayers(c, RotaryLayer(c.d_head, 10000.0));
  return c;
}

namespace {

// The built-in shapes beside BuiltinConfig (weights.h lists them).
ModelConfig Gpt2Small() {
  ModelConfig c;
  c.model_type = "gpt2";
  c.d_model = 768, c.n_layers = 12, c.n_heads = c.n_kv_heads = 12, c.d_head = 64;
  c.d_mlp = 3072, c.vocab_size = 50257, c.max_positions = 1024;
  c.bos_id = 50256, c.eos_ids = {50256};  // <|endoftext|>, as GPT-2's config.json says
  c.norm = NormKind::kLayerNorm, c.act = ActKind::kGeluTanh;
  c.learned_positions = true, c.qkv_bias = c.o_bias = c.mlp_bias = true;
  c.tied_embeddings = true;
  LayerSpec layer;
  layer.attention.scale = DefaultAttentionScale(c.d_head);
  layer.mlp = MlpKind::kDense;
  SetUniformLayers(c, layer);
  return c;
}

ModelConfig Llama1b() {  // Llama-3.2-1B's geometry on the tiny model's architecture
  ModelConfig c = BuiltinConfig();
  c.d_model = 2048, c.n_layers = 16, c.n_heads = 32, c.n_kv_heads = 8, c.d_head = 64;
  c.d_mlp = 8192, c.vocab_size = 128256, c.max_positions = 8192;
  c.tied_embeddings = true;
  SetUniformLayers(c, RotaryLayer(c.d_head, 500000.0));
  return c;
}

// A Mixtral-shaped mixture (8 experts of 1792, 2 per token) and the dense model with the same
// active parameters (one gated MLP of 2 × 1792): MoE decode against its dense twin.
ModelConfig MixtureOrDenseMini(bool moe) {
  ModelConfig c = BuiltinConfig();
  c.model_type = moe ? "mixtral" : "llama";
  c.d_model = 1024, c.n_layers = 8, c.n_heads = 16, c.n_kv_heads = 4, c.d_head = 64;
  c.vocab_size = 32000, c.max_positions = 4096;
  c.d_mlp = moe ? 1792 : 2 * 1792;
  LayerSpec layer = RotaryLayer(c.d_head, 1e6);
  if (moe) layer.mlp = MlpKind::kMoe, layer.moe = {8, 2, true, 1792};
  SetUniformLayers(c, layer);
  return c;
}

ModelConfig Gemma2_2b() {  // Gemma-2-2B's geometry and layer pattern
  ModelConfig c = BuiltinConfig();
  c.model_type = "gemma2";
  c.d_model = 2304, c.n_layers = 26, c.n_heads = 8, c.n_kv_heads = 4, c.d_head = 256;
  c.d_mlp = 9216, c.vocab_size = 256000, c.max_positions = 8192, c.norm_eps = 1e-6;
  c.act = ActKind::kGeluTanh, c.tied_embeddings = true;
  c.embed_scale = static_cast<float>(std::sqrt(2304.0)), c.final_softcap = 30.0f;
  SetUniformLayers(c, RotaryLayer(c.d_head, 10000.0));
  for (int l = 0; l < c.n_layers; ++l) {
    LayerSpec& layer = c.layers[l];
    layer.norms = NormPlacement::kPreAndPost;
    layer.attention = {static_cast<float>(std::pow(256.0, -0.5)), l % 2 == 0 ? 4096 : 0, 50.0f};
  }
  return c;
}

struct NamedConfig {
  const char* name;
  ModelConfig (*make)();
};

constexpr NamedConfig kBuiltins[] = {
    {"tiny", BuiltinConfig},
    {"gpt2-small", Gpt2Small},
    {"llama-1b", Llama1b},
    {"mixtral-mini", [] { return MixtureOrDenseMini(true); }},
    {"dense-mini", [] { return MixtureOrDenseMini(false); }},
    {"gemma2-2b", Gemma2_2b},
};

}  // namespace

absl::StatusOr<ModelConfig> BuiltinConfigNamed(std::string_view name) {
  for (const NamedConfig& b : kBuiltins) {
    if (name == b.name) return b.make();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown built-in model '", std::string(name), "' (have: ",
      absl::StrJoin(kBuiltins, ", ", [](std::string* out, const NamedConfig& b) { out->append(b.name); }),
      ")"));
}

}  // namespace lensd
