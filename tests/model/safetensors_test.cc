#include "engine/model/safetensors.h"

#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::SharedDir;
using testing::GoldenDir;

void CopyFile(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(Safetensors, WriterRoundTrips) {
  SafetensorsWriter w;
  float data[6] = {1, 2, 3, 4, 5, 6};
  w.Add("b", DType::kF32, {2, 3}, data, sizeof(data));
  int32_t ids[2] = {7, 8};
  w.Add("a", DType::kI32, {1, 2}, ids, sizeof(ids));
  std::string bytes = w.Serialize();
  EXPECT_EQ((bytes.size() - 8 - 24) % 8, 0u);
  auto f = SafetensorsFile::Parse(bytes.data(), bytes.size(), "mem");
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* b = (*f)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(static_cast<const float*>(b->data)[5], 6.0f);
  EXPECT_EQ(static_cast<const int32_t*>((*f)->Find("a")->data)[1], 8);
}

TEST(Safetensors, RejectsCorruptFilesNamingThem) {
  float data[4] = {};
  SafetensorsWriter w;
  w.Add("t", DType::kF32, {4}, data, sizeof(data));
  std::string good = w.Serialize();
  const std::string dir = testing::TempDir("st");
  WriteBytes(dir + "/trunc.safetensors", good.substr(0, good.size() - 4));
  auto trunc = SafetensorsFile::Open(dir + "/trunc.safetensors");
  ASSERT_FALSE(trunc.ok());
  EXPECT_NE(trunc.status().message().find("trunc.safetensors"), std::string::npos);
  EXPECT_NE(trunc.status().message().find("'t'"), std::string::npos);
  std::string huge = good;
  huge[0] = '\xff';
  EXPECT_FALSE(SafetensorsFile::Parse(huge.data(), huge.size(), "h").ok());
  std::string bad_json = good;
  bad_json[9] = '!';
  EXPECT_FALSE(SafetensorsFile::Parse(bad_json.data(), bad_json.size(), "j").ok());
  EXPECT_FALSE(SafetensorsFile::Parse("abc", 3, "short").ok());
  EXPECT_EQ(SafetensorsFile::Open(dir + "/absent.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

std::string WithHeader(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\0');
}

// D7 of the hardening audit: [2^40, 2^24] elements wrapped to 0 in 64 bits and was accepted
// as a 0-byte tensor. Every shape whose size overflows must be refused by the size check.
TEST(Safetensors, ShapeSizeOverflowIsRefused) {
  for (const char* shape : {"[1099511627776, 16777216]", "[4294967296, 4294967296, 0]",
                            "[1099511627776, 1099511627776, 1099511627776]",
                            "[1, 2, 3, 4, 5, 6, 7]"}) {
    const std::string bytes = WithHeader(
        absl::StrCat(R"({"t":{"dtype":"F32","shape":)", shape, R"(,"data_offsets":[0,0]}})"), 0);
    auto f = SafetensorsFile::Parse(bytes.data(), bytes.size(), "over.safetensors");
    ASSERT_FALSE(f.ok()) << shape;
    EXPECT_NE(f.status().message().find("over.safetensors"), std::string::npos);
    EXPECT_NE(f.status().message().find("'t'"), std::string::npos);
  }
  // A zero dimension anywhere is an honest empty tensor.
  const std::string empty =
      WithHeader(R"({"t":{"dtype":"F32","shape":[0, 1099511627776],"data_offsets":[0,0]}})", 0);
  EXPECT_TRUE(SafetensorsFile::Parse(empty.data(), empty.size(), "e").ok());
}

TEST(Checkpoint, WrongShapeAndMissingTensorNameFileAndTensor) {
  const std::string dir = testing::TempDir("badshape");
  CopyFile(GoldenDir() + "/llama/config.json", dir + "/config.json");
  auto src = SafetensorsFile::Open(GoldenDir() + "/llama/model.safetensors");
  ASSERT_TRUE(src.ok());
  SafetensorsWriter w;
  for (const auto& [name, info] : (*src)->tensors()) {
    if (name == "model.layers.1.mlp.up_proj.weight") continue;  // missing
    std::vector<int64_t> shape = info.shape;
    if (name == "model.layers.0.self_attn.k_proj.weight") std::swap(shape[0], shape[1]);
    w.Add(name, info.dtype, shape, info.data, info.num_bytes);
  }
  ASSERT_TRUE(w.WriteFile(dir + "/model.safetensors").ok());
  LoadOptions options;
  options.model_dir = dir;
  auto m = Model::Load(options);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("model.layers.0.self_attn.k_proj.weight"), std::string::npos);
  EXPECT_NE(m.status().message().find("model.safetensors"), std::string::npos);
  options.split = "0-0,1-2";  // never reached: layer 0 fails first. Fix the shape and retry:
  SafetensorsWriter w2;
  for (const auto& [name, info] : (*src)->tensors()) {
    if (name != "model.layers.1.mlp.up_proj.weight") w2.Add(name, info.dtype, info.shape, info.data, info.num_bytes);
  }
  ASSERT_TRUE(w2.WriteFile(dir + "/model.safetensors").ok());
  options.split.clear();
  m = Model::Load(options);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos);
}

TEST(Checkpoint, ShardedIndexLoadsLikeSingleFile) {
  const std::string golden = GoldenDir() + "/qwen2";
  const std::string dir = testing::TempDir("sharded");
  ASSERT_EQ(testing::WriteShardedCheckpoint(golden, dir).size(), 4u);
  LoadOptions a, b;
  a.model_dir = golden;
  b.model_dir = dir;
  auto ma = Model::Load(a), mb = Model::Load(b);
  ASSERT_TRUE(ma.ok() && mb.ok()) << mb.status();
  std::vector<int32_t> ids = {5, 17, 300, 2, 999};
  auto ra = RunWithCache(**ma, ids, HookSelection::None((*ma)->config()));
  auto rb = RunWithCache(**mb, ids, HookSelection::None((*mb)->config()));
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(0, std::memcmp(ra->logits.As<float>(), rb->logits.As<float>(), ra->logits.NumBytes()));
}

}  // namespace
}  // namespace lensd
