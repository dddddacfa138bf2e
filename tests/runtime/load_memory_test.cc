// Loading never holds a second copy of the model in host memory: a generated ≥ 1 GiB bf16
// checkpoint in 3 shards is loaded onto virtual devices while a sampler records peak anonymous
// memory (RssAnon); beyond what the devices hold (weights + KV), at most the largest tensor
// (as float32) plus a constant may be resident at any moment.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

int64_t RssAnonBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  }
  return -1;
}

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t Bytes() const {
    int64_t n = 2;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Writes zeros in bf16 without ever holding a tensor in memory.
void WriteShard(const std::string& path, const std::vector<TensorSpec>& tensors) {
  std::string header = "{";
  int64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    if (header.size() > 1) header += ",";
    header += absl::StrCat("\"", t.name, "\":{\"dtype\":\"BF16\",\"shape\":[",
                           absl::StrJoin(t.shape, ","), "],\"data_offsets\":[", offset, ",",
                           offset + t.Bytes(), "]}");
    offset += t.Bytes();
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  const std::string zeros(8 << 20, '\0');
  for (int64_t left = offset; left > 0; left -= static_cast<int64_t>(zeros.size())) {
    out.write(zeros.data(), std::min<int64_t>(left, zeros.size()));
  }
  ASSERT_TRUE(out.good()) << path;
}

TEST(LoadMemory, NoSecondCopyOfTheModelInHostMemory) {
#if defined(LENSD_SANITIZED)
  // Sanitizers bring their own allocators (ASan keeps freed blocks in a 256 MiB quarantine and
  // adds redzones): resident memory then measures the sanitizer, not the loader.
  GTEST_SKIP() << "resident-memory bound not meaningful under a sanitizer's allocator";
#endif
  constexpr int kLayers = 24, kD = 1024, kKv = 512, kMlp = 2816, kVocab = 128256;
  const std::string dir = testing::TempDir("load_memory");
  std::ofstream(dir + "/config.json") << absl::StrCat(
      R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":)", kD,
      R"(,"intermediate_size":)", kMlp, R"(,"num_attention_heads":16,"num_key_value_heads":8,)",
      R"("num_hidden_layers":)", kLayers, R"(,"vocab_size":)", kVocab,
      R"(,"max_position_embeddings":2048,"rms_norm_eps":1e-5,"rope_theta":500000.0,)",
      R"("tie_word_embeddings":false,"torch_dtype":"bfloat16"})");
  std::vector<std::vector<TensorSpec>> shards(3);
  shards[0].push_back({"model.embed_tokens.weight", {kVocab, kD}});
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    auto& shard = shards[1 + (l >= kLayers / 2)];
    shard.push_back({p + "input_layernorm.weight", {kD}});
    shard.push_back({p + "post_attention_layernorm.weight", {kD}});
    shard.push_back({p + "self_attn.q_proj.weight", {kD, kD}});
    shard.push_back({p + "self_attn.k_proj.weight", {kKv, kD}});
    shard.push_back({p + "self_attn.v_proj.weight", {kKv, kD}});
    shard.push_back({p + "self_attn.o_proj.weight", {kD, kD}});
    shard.push_back({p + "mlp.gate_proj.weight", {kMlp, kD}});
    shard.push_back({p + "mlp.up_proj.weight", {kMlp, kD}});
    shard.push_back({p + "mlp.down_proj.weight", {kD, kMlp}});
  }
  shards[2].push_back({"model.norm.weight", {kD}});
  shards[2].push_back({"lm_head.weight", {kVocab, kD}});
  std::string weight_map;
  int64_t total = 0, largest = 0;
  for (int s = 0; s < 3; ++s) {
    const std::string file = absl::StrCat("model-0000", s + 1, "-of-00003.safetensors");
    WriteShard(dir + "/" + file, shards[s]);
    for (const TensorSpec& t : shards[s]) {
      absl::StrAppend(&weight_map, weight_map.empty() ? "" : ",", "\"", t.name, "\":\"", file, "\"");
      total += t.Bytes();
      largest = std::max(largest, t.Bytes());
    }
  }
  ASSERT_GE(total, int64_t{1} << 30);
  std::ofstream(dir + "/model.safetensors.index.json")
      << absl::StrCat(R"({"metadata":{"total_size":)", total, R"(},"weight_map":{)", weight_map, "}}");

  const int64_t baseline = RssAnonBytes();
  ASSERT_GT(baseline, 0);
  std::atomic<bool> done{false};
  std::atomic<int64_t> peak{baseline};
  std::thread sampler([&] {
    while (!done) {
      peak = std::max(peak.load(), RssAnonBytes());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  LoadOptions options;
  options.model_dir = dir;
  options.devices = "cpu:0,cpu:1";
  options.kv_tokens = 64;
  auto model = Model::Load(options);
  done = true;
  sampler.join();
  ASSERT_TRUE(model.ok()) << model.status();
  int64_t held = 0;
  for (const DeviceLayout& d : (*model)->Devices()) held += d.weight_bytes + d.kv_bytes;
  const int64_t largest_f32 = largest * 2, constant = int64_t{64} << 20;
  const int64_t transient = peak - baseline - held;
  EXPECT_LE(transient, largest_f32 + constant)
      << "checkpoint " << total / 1048576 << " MiB (bf16), devices hold " << held / 1048576
      << " MiB, peak anon beyond that " << transient / 1048576 << " MiB, largest tensor (f32) "
      << largest_f32 / 1048576 << " MiB";
  std::printf("checkpoint %lld MiB bf16; devices hold %lld MiB; peak transient %lld MiB "
              "(bound %lld MiB)\n",
              static_cast<long long>(total >> 20), static_cast<long long>(held >> 20),
              static_cast<long long>(transient >> 20),
              static_cast<long long>((largest_f32 + constant) >> 20));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lensd
