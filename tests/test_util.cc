#include "tests/test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/runtime/generate.h"

namespace lensd::testing {

std::string SharedDir() {
  const char* env = std::getenv("LENSD_SHARED_DIR");
  return env ? env : LENSD_SHARED_DIR;
}

std::string GoldenDir() {
  const char* env = std::getenv("LENSD_GOLDEN_DIR");  // bundles run away from the checkout
  return env ? env : LENSD_GOLDEN_DIR;
}

std::string FamiliesDir() { return GoldenDir() + "/../families"; }

std::string FamilyDir(const std::string& family) {
  struct stat st;
  const std::string newer = FamiliesDir() + "/" + family;
  return ::stat(newer.c_str(), &st) == 0 ? newer : GoldenDir() + "/" + family;
}

std::unique_ptr<Model> LoadFamily(const std::string& family, int block_size) {
  LoadOptions o;
  o.model_dir = FamilyDir(family);
  o.block_size = block_size;
  auto m = Model::Load(o);
  if (!m.ok()) {
    ADD_FAILURE() << family << ": " << m.status();
    return nullptr;
  }
  return *std::move(m);
}

std::string SaeDir(const std::string& name) { return GoldenDir() + "/../saes/" + name; }

bool SharedExists(const std::string& relative) {
  struct stat st;
  return ::stat((SharedDir() + "/" + relative).c_str(), &st) == 0;
}

Buffer ToF32(const TensorInfo& info) {
  Buffer b = Buffer::Host(DType::kF32, Shape::FromVector(info.shape));
  ConvertToF32(info.dtype, info.data, b.As<float>(), b.shape().NumElements());
  return b;
}

std::vector<int32_t> ToIds(const TensorInfo& info) {
  std::vector<int32_t> ids(info.num_bytes / 4);
  std::memcpy(ids.data(), info.data, info.num_bytes);
  return ids;
}

std::vector<int32_t> ReferencePrompt(const std::string& family, int index) {
  auto ref = SafetensorsFile::Open(FamilyDir(family) + "/reference.safetensors");
  const TensorInfo* ids = ref.ok() ? (*ref)->Find(absl::StrCat("p", index, ".input_ids")) : nullptr;
  if (ids == nullptr) {
    ADD_FAILURE() << family << " has no reference prompt " << index << ": " << ref.status();
    return {};
  }
  return ToIds(*ids);
}

::testing::AssertionResult FailsWith(const absl::Status& status, absl::StatusCode code,
                                     const std::string& needle) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected " << absl::StatusCodeToString(code) << ", got " << status;
  }
  if (status.message().find(needle) == std::string::npos) {
    return ::testing::AssertionFailure() << "'" << needle << "' not in: " << status;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult AllClose(const std::string& what, const TensorView& got,
                                    const TensorView& ref, double tol) {
  if (got.shape != ref.shape) {
    return ::testing::AssertionFailure() << what << ": shape " << got.shape.ToString()
                                         << " != reference " << ref.shape.ToString();
  }
  const float* g = got.As<float>();
  const float* r = ref.As<float>();
  const int64_t n = ref.NumElements();
  double max_abs = 1.0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(r[i])) max_abs = std::max(max_abs, std::fabs(double{r[i]}));
  }
  const double bound = tol * max_abs;
  double worst = 0;
  int64_t worst_at = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isinf(r[i]) || std::isinf(g[i])) {
      if (r[i] != g[i]) {
        return ::testing::AssertionFailure() << what << ": element " << i << " is " << g[i]
                                             << ", reference " << r[i] << " (masking differs)";
      }
      continue;
    }
    double d = std::fabs(double{g[i]} - r[i]);
    if (!(d <= worst) || std::isnan(g[i])) worst = std::isnan(g[i]) ? INFINITY : d, worst_at = i;
  }
  if (worst > bound) {
    return ::testing::AssertionFailure() << what << ": max |diff| " << worst << " at " << worst_at
                                         << " (got " << g[worst_at] << ", ref " << r[worst_at]
                                         << ") exceeds " << bound;
  }
  return ::testing::AssertionSuccess();
}

std::string TempDir(const std::string& tag) {
  std::string dir = absl::StrCat(::testing::TempDir(), "lensd_", tag, "_", ::getpid());
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

std::vector<std::string> WriteShardedCheckpoint(const std::string& from, const std::string& to) {
  std::ifstream config_in(from + "/config.json", std::ios::binary);
  std::ofstream(to + "/config.json", std::ios::binary) << config_in.rdbuf();
  auto src = SafetensorsFile::Open(from + "/model.safetensors");
  EXPECT_TRUE(src.ok()) << src.status();
  if (!src.ok()) return {};
  std::vector<std::string> files = {"config.json", "model-00001-of-00002.safetensors",
                                    "model-00002-of-00002.safetensors",
                                    "model.safetensors.index.json"};
  SafetensorsWriter shard[2];
  std::string weight_map;
  int i = 0;
  for (const auto& [name, info] : (*src)->tensors()) {
    const int s = (i++) % 2;
    shard[s].Add(name, info.dtype, info.shape, info.data, info.num_bytes);
    absl::StrAppend(&weight_map, weight_map.empty() ? "" : ",", "\"", name, "\":\"", files[1 + s], "\"");
  }
  for (int s = 0; s < 2; ++s) EXPECT_TRUE(shard[s].WriteFile(to + "/" + files[1 + s]).ok());
  std::ofstream(to + "/" + files[3]) << "{\"metadata\":{},\"weight_map\":{" << weight_map << "}}";
  return files;
}

::testing::AssertionResult GreedyIdsAre(Model& model, const std::vector<int32_t>& prompt,
                                        const std::vector<int32_t>& expected) {
  SamplingParams sp;
  sp.max_new_tokens = static_cast<int>(expected.size() - prompt.size());
  sp.ignore_eos = true;
  auto gen = Generate(model, prompt, sp);
  if (!gen.ok()) return ::testing::AssertionFailure() << gen.status();
  std::vector<int32_t> full = prompt;
  full.insert(full.end(), gen->tokens.begin(), gen->tokens.end());
  if (full == expected) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "greedy ids " << ::testing::PrintToString(full)
                                       << ", reference " << ::testing::PrintToString(expected);
}

}  // namespace lensd::testing
