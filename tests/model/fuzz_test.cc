// Random and mutated inputs to every parser: they must return errors, never crash.
#include <random>

#include "engine/model/config.h"
#include "engine/model/safetensors.h"
#include "engine/model/tokenizer.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

std::string RandomBytes(std::mt19937& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

TEST(Fuzz, RandomBytesToParsers) {
  std::mt19937 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes = RandomBytes(rng, rng() % 200);
    (void)ParseModelConfig(bytes, "fuzz").ok();
    (void)SafetensorsFile::Parse(bytes.data(), bytes.size(), "fuzz").ok();
    (void)ParseHfTokenizerJson(bytes).ok();
  }
}

TEST(Fuzz, MutatedSafetensorsHeaders) {
  std::mt19937 rng(7);
  float data[12] = {};
  SafetensorsWriter w;
  w.Add("x", DType::kF32, {3, 4}, data, sizeof(data));
  w.Add("y", DType::kBF16, {2}, data, 4);
  const std::string good = w.Serialize();
  int rejected = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string m = good;
    for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) {
      m[rng() % std::min<size_t>(m.size(), 120)] = static_cast<char>(rng() & 0xff);
    }
    auto f = SafetensorsFile::Parse(m.data(), m.size(), "mut");
    if (!f.ok()) {
      ++rejected;
      continue;
    }
    for (const auto& [name, info] : (*f)->tensors()) {  // every accepted range is readable
      volatile char sink = 0;
      for (size_t b = 0; b < info.num_bytes; ++b) sink ^= static_cast<const char*>(info.data)[b];
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(Fuzz, RandomTextToEveryTokenizer) {
  std::vector<std::unique_ptr<Tokenizer>> toks;
  toks.push_back(MakeByteTokenizer());
  const std::string shared = testing::SharedDir() + "/tokenizers";
  auto add = [&](absl::StatusOr<std::unique_ptr<Tokenizer>> t) {
    if (t.ok()) toks.push_back(std::move(*t));
  };
  add(LoadHfTokenizerJson(shared + "/gpt2/tokenizer.json"));
  add(LoadHfTokenizerJson(shared + "/llama3style/tokenizer.json"));
  add(LoadSentencePiece(shared + "/llama2/tokenizer.model"));
  ASSERT_GE(toks.size(), 1u);
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::string text = RandomBytes(rng, rng() % 64);
    for (const auto& t : toks) {
      auto ids = t->Encode(text);
      if (ids.ok()) (void)t->Decode(*ids);
      std::vector<int> junk = {-5, 1 << 30, 3};
      (void)t->Decode(junk);
    }
  }
}

}  // namespace
}  // namespace lensd
