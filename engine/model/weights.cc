#include "engine/model/weights.h"

#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

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

class CheckpointSource : public WeightSource {
 public:
  CheckpointSource(ModelConfig c, std::unique_ptr<Checkpoint> ck, std::string prefix)
      : config_(std::move(c)), ck_(std::move(ck)), prefix_(std::move(prefix)) {}
  const ModelConfig& config() const override { return config_; }
  absl::StatusOr<EmbedWeights> Embed() const override;
  absl::StatusOr<LayerWeights> Layer(int layer) const override;
  absl::StatusOr<HeadWeights> Head() const override;

 private:
  // Reads `name` (prefixed), checks its shape and converts to float32.
  absl::StatusOr<Buffer> Read(const std::string& name, Shape expect) const;
  absl::StatusOr<Buffer> ReadOptional(const std::string& name, Shape expect, bool want) const;
  absl::Status ReadGpt2(const std::string& p, LayerWeights& w) const;
  absl::Status ReadLlama(const std::string& p, LayerWeights& w) const;
  absl::Status ReadNeox(const std::string& p, LayerWeights& w) const;

  ModelConfig config_;
  std::unique_ptr<Checkpoint> ck_;
  std::string prefix_;  // "transformer." for GPT-2 checkpoints saved with the LM head
};

absl::StatusOr<Buffer> CheckpointSource::Read(const std::string& name, Shape expect) const {
  std::string full = absl::StrCat(prefix_, name);
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

absl::StatusOr<Buffer> CheckpointSource::ReadOptional(const std::string& name, Shape expect,
                                                      bool want) const {
  if (!want) return Buffer();
  return Read(name, expect);
}

absl::StatusOr<EmbedWeights> CheckpointSource::Embed() const {
  const auto& c = config_;
  EmbedWeights e;
  Shape vd{c.vocab_size, c.d_model};
  switch (c.family) {
    case Family::kGpt2: {
      ASSIGN_OR_RETURN(e.w_e, Read("wte.weight", vd));
      ASSIGN_OR_RETURN(e.w_pos, Read("wpe.weight", {c.max_positions, c.d_model}));
      break;
    }
    case Family::kGptNeox: {
      ASSIGN_OR_RETURN(e.w_e, Read("gpt_neox.embed_in.weight", vd));
      break;
    }
    case Family::kLlama:
    case Family::kMistral:
    case Family::kQwen2: {
      ASSIGN_OR_RETURN(e.w_e, Read("model.embed_tokens.weight", vd));
      break;
    }
  }
  return e;
}

absl::StatusOr<HeadWeights> CheckpointSource::Head() const {
  const auto& c = config_;
  HeadWeights h;
  Shape d{c.d_model}, vd{c.vocab_size, c.d_model};
  std::string norm, unembed, embed;
  switch (c.family) {
    case Family::kGpt2: {
      norm = "ln_f", unembed = "lm_head.weight", embed = "wte.weight";
      break;
    }
    case Family::kGptNeox: {
      norm = "gpt_neox.final_layer_norm", unembed = "embed_out.weight";
      embed = "gpt_neox.embed_in.weight";
      break;
    }
    case Family::kLlama:
    case Family::kMistral:
    case Family::kQwen2:
      norm = "model.norm", unembed = "lm_head.weight", embed = "model.embed_tokens.weight";
      break;
  }
  const bool ln = c.norm == NormKind::kLayerNorm;
  ASSIGN_OR_RETURN(h.lnf_w, Read(norm + ".weight", d));
  ASSIGN_OR_RETURN(h.lnf_b, ReadOptional(norm + ".bias", d, ln));
  bool tied = c.tied_embeddings || !ck_->Has(unembed);
  ASSIGN_OR_RETURN(h.w_u, Read(tied ? embed : unembed, vd));
  return h;
}

absl::Status CheckpointSource::ReadGpt2(const std::string& p, LayerWeights& w) const {
  const auto& c = config_;
  int64_t D = c.d_model, M = c.d_mlp;
  ASSIGN_OR_RETURN(w.ln1_w, Read(p + "ln_1.weight", {D}));
  ASSIGN_OR_RETURN(w.ln1_b, Read(p + "ln_1.bias", {D}));
  ASSIGN_OR_RETURN(Buffer qkv, Read(p + "attn.c_attn.weight", {D, 3 * D}));
  ASSIGN_OR_RETURN(Buffer qkv_b, Read(p + "attn.c_attn.bias", {3 * D}));
  Buffer qkv_t = Transpose(qkv);  // [3D, D]
  w.wq = SliceRows(qkv_t, 0, D), w.wk = SliceRows(qkv_t, D, D), w.wv = SliceRows(qkv_t, 2 * D, D);
  w.bq = SliceRows(qkv_b, 0, D), w.bk = SliceRows(qkv_b, D, D), w.bv = SliceRows(qkv_b, 2 * D, D);
  ASSIGN_OR_RETURN(Buffer o, Read(p + "attn.c_proj.weight", {D, D}));
  w.wo = Transpose(o);
  ASSIGN_OR_RETURN(w.bo, Read(p + "attn.c_proj.bias", {D}));
  ASSIGN_OR_RETURN(w.ln2_w, Read(p + "ln_2.weight", {D}));
  ASSIGN_OR_RETURN(w.ln2_b, Read(p + "ln_2.bias", {D}));
  ASSIGN_OR_RETURN(Buffer fc, Read(p + "mlp.c_fc.weight", {D, M}));
  w.w_in = Transpose(fc);
  ASSIGN_OR_RETURN(w.b_in, Read(p + "mlp.c_fc.bias", {M}));
  ASSIGN_OR_RETURN(Buffer proj, Read(p + "mlp.c_proj.weight", {M, D}));
  w.w_out = Transpose(proj);
  ASSIGN_OR_RETURN(w.b_out, Read(p + "mlp.c_proj.bias", {D}));
  return absl::OkStatus();
}

absl::Status CheckpointSource::ReadLlama(const std::string& p, LayerWeights& w) const {
  const auto& c = config_;
  int64_t D = c.d_model, M = c.d_mlp, Q = c.n_heads * c.d_head, KV = c.n_kv_heads * c.d_head;
  ASSIGN_OR_RETURN(w.ln1_w, Read(p + "input_layernorm.weight", {D}));
  ASSIGN_OR_RETURN(w.ln2_w, Read(p + "post_attention_layernorm.weight", {D}));
  const std::string a = p + "self_attn.";
  ASSIGN_OR_RETURN(w.wq, Read(a + "q_proj.weight", {Q, D}));
  ASSIGN_OR_RETURN(w.wk, Read(a + "k_proj.weight", {KV, D}));
  ASSIGN_OR_RETURN(w.wv, Read(a + "v_proj.weight", {KV, D}));
  ASSIGN_OR_RETURN(w.wo, Read(a + "o_proj.weight", {D, Q}));
  ASSIGN_OR_RETURN(w.bq, ReadOptional(a + "q_proj.bias", {Q}, c.qkv_bias));
  ASSIGN_OR_RETURN(w.bk, ReadOptional(a + "k_proj.bias", {KV}, c.qkv_bias));
  ASSIGN_OR_RETURN(w.bv, ReadOptional(a + "v_proj.bias", {KV}, c.qkv_bias));
  ASSIGN_OR_RETURN(w.bo, ReadOptional(a + "o_proj.bias", {D}, c.o_bias));
  const std::string m = p + "mlp.";
  ASSIGN_OR_RETURN(w.w_in, Read(m + "gate_proj.weight", {M, D}));
  ASSIGN_OR_RETURN(w.w_up, Read(m + "up_proj.weight", {M, D}));
  ASSIGN_OR_RETURN(w.w_out, Read(m + "down_proj.weight", {D, M}));
  ASSIGN_OR_RETURN(w.b_in, ReadOptional(m + "gate_proj.bias", {M}, c.mlp_bias));
  ASSIGN_OR_RETURN(w.b_up, ReadOptional(m + "up_proj.bias", {M}, c.mlp_bias));
  ASSIGN_OR_RETURN(w.b_out, ReadOptional(m + "down_proj.bias", {D}, c.mlp_bias));
  return absl::OkStatus();
}

absl::Status CheckpointSource::ReadNeox(const std::string& p, LayerWeights& w) const {
  const auto& c = config_;
  int64_t D = c.d_model, M = c.d_mlp, H = c.n_heads, dh = c.d_head;
  ASSIGN_OR_RETURN(w.ln1_w, Read(p + "input_layernorm.weight", {D}));
  ASSIGN_OR_RETURN(w.ln1_b, Read(p + "input_layernorm.bias", {D}));
  ASSIGN_OR_RETURN(w.ln2_w, Read(p + "post_attention_layernorm.weight", {D}));
  ASSIGN_OR_RETURN(w.ln2_b, Read(p + "post_attention_layernorm.bias", {D}));
  // Fused rows are [H, 3, dh]: per head, its q, k and v rows.
  ASSIGN_OR_RETURN(Buffer qkv, Read(p + "attention.query_key_value.weight", {3 * H * dh, D}));
  ASSIGN_OR_RETURN(Buffer qkv_b, ReadOptional(p + "attention.query_key_value.bias",
                                              {3 * H * dh}, c.qkv_bias));
  Buffer* outs[3] = {&w.wq, &w.wk, &w.wv};
  Buffer* bias_outs[3] = {&w.bq, &w.bk, &w.bv};
  for (int s = 0; s < 3; ++s) {
    *outs[s] = HostF32({H * dh, D});
    if (!qkv_b.empty()) *bias_outs[s] = HostF32({H * dh});
    for (int64_t h = 0; h < H; ++h) {
      int64_t src = (h * 3 + s) * dh;
      std::memcpy(outs[s]->As<float>() + h * dh * D, qkv.As<float>() + src * D, dh * D * 4);
      if (!qkv_b.empty()) {
        std::memcpy(bias_outs[s]->As<float>() + h * dh, qkv_b.As<float>() + src, dh * 4);
      }
    }
  }
  ASSIGN_OR_RETURN(w.wo, Read(p + "attention.dense.weight", {D, D}));
  ASSIGN_OR_RETURN(w.bo, ReadOptional(p + "attention.dense.bias", {D}, c.o_bias));
  ASSIGN_OR_RETURN(w.w_in, Read(p + "mlp.dense_h_to_4h.weight", {M, D}));
  ASSIGN_OR_RETURN(w.b_in, Read(p + "mlp.dense_h_to_4h.bias", {M}));
  ASSIGN_OR_RETURN(w.w_out, Read(p + "mlp.dense_4h_to_h.weight", {D, M}));
  ASSIGN_OR_RETURN(w.b_out, Read(p + "mlp.dense_4h_to_h.bias", {D}));
  return absl::OkStatus();
}

absl::StatusOr<LayerWeights> CheckpointSource::Layer(int layer) const {
  LayerWeights w;
  switch (config_.family) {
    case Family::kGpt2:
      RETURN_IF_ERROR(ReadGpt2(absl::StrCat("h.", layer, "."), w));
      break;
    case Family::kGptNeox:
      RETURN_IF_ERROR(ReadNeox(absl::StrCat("gpt_neox.layers.", layer, "."), w));
      break;
    case Family::kLlama:
    case Family::kMistral:
    case Family::kQwen2:
      RETURN_IF_ERROR(ReadLlama(absl::StrCat("model.layers.", layer, "."), w));
      break;
  }
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
    const auto& c = config_;
    int64_t D = c.d_model, M = c.d_mlp, Q = c.n_heads * c.d_head, KV = c.n_kv_heads * c.d_head;
    uint64_t s = 100 + layer * 32;
    LayerWeights w;
    w.ln1_w = Normal({D}, 0.1, s + 1, 1.0);
    w.ln2_w = Normal({D}, 0.1, s + 2, 1.0);
    if (c.norm == NormKind::kLayerNorm) {
      w.ln1_b = Normal({D}, 0.02, s + 3);
      w.ln2_b = Normal({D}, 0.02, s + 4);
    }
    w.wq = Normal({Q, D}, 1.0 / std::sqrt(D), s + 5);
    w.wk = Normal({KV, D}, 1.0 / std::sqrt(D), s + 6);
    w.wv = Normal({KV, D}, 1.0 / std::sqrt(D), s + 7);
    w.wo = Normal({D, Q}, 1.0 / std::sqrt(Q), s + 8);
    w.w_in = Normal({M, D}, 1.0 / std::sqrt(D), s + 9);
    if (c.gated_mlp) w.w_up = Normal({M, D}, 1.0 / std::sqrt(D), s + 10);
    w.w_out = Normal({D, M}, 1.0 / std::sqrt(M), s + 11);
    if (c.qkv_bias) {
      w.bq = Normal({Q}, 0.02, s + 12), w.bk = Normal({KV}, 0.02, s + 13);
      w.bv = Normal({KV}, 0.02, s + 14);
    }
    if (c.o_bias) w.bo = Normal({D}, 0.02, s + 15);
    if (c.mlp_bias) {
      w.b_in = Normal({M}, 0.02, s + 16), w.b_out = Normal({D}, 0.02, s + 17);
      if (c.gated_mlp) w.b_up = Normal({M}, 0.02, s + 18);
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

absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpointSource(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir + "/config.json"));
  ASSIGN_OR_RETURN(auto ck, Checkpoint::Open(dir));
  std::string prefix = config.family == Family::kGpt2 ? "transformer." : "";
  return std::unique_ptr<WeightSource>(
      new CheckpointSource(std::move(config), std::move(ck), prefix));
}

std::unique_ptr<WeightSource> MakeRandomSource(const ModelConfig& config, uint64_t seed) {
  return std::make_unique<RandomSource>(config, seed);
}

ModelConfig BuiltinConfig() {
  ModelConfig c;
  c.family = Family::kLlama;
  c.d_model = 128, c.n_layers = 4, c.n_heads = 4, c.n_kv_heads = 2, c.d_head = 32;
  c.d_mlp = 344, c.vocab_size = 259, c.max_positions = 2048;
  c.norm = NormKind::kRmsNorm, c.norm_eps = 1e-5, c.act = ActKind::kSilu, c.gated_mlp = true;
  c.rope.theta = 10000.0, c.rope.rotary_dim = 32;
  c.bos_id = 1, c.eos_ids = {2};
  return c;
}

absl::StatusOr<ModelConfig> BuiltinConfigNamed(std::string_view name) {
  if (name == "tiny") return BuiltinConfig();
  if (name == "gpt2-small") {
    ModelConfig c;
    c.family = Family::kGpt2;
    c.d_model = 768, c.n_layers = 12, c.n_heads = c.n_kv_heads = 12, c.d_head = 64;
    c.d_mlp = 3072, c.vocab_size = 50257, c.max_positions = 1024;
    c.norm = NormKind::kLayerNorm, c.act = ActKind::kGeluTanh, c.gated_mlp = false;
    c.learned_positions = true, c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.tied_embeddings = true;
    return c;
  }
  if (name == "llama-1b") {  // Llama-3.2-1B's geometry on the tiny model's architecture
    ModelConfig c = BuiltinConfig();
    c.d_model = 2048, c.n_layers = 16, c.n_heads = 32, c.n_kv_heads = 8, c.d_head = 64;
    c.d_mlp = 8192, c.vocab_size = 128256, c.max_positions = 8192;
    c.rope.theta = 500000.0, c.rope.rotary_dim = 64;
    c.tied_embeddings = true;
    return c;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown built-in model '", std::string(name),
                                                 "' (have: tiny, gpt2-small, llama-1b)"));
}

}  // namespace lensd
