// The 18 tricky texts of shared/tokenizers/cases.json, exactly, for every tokenizer format.
#include "engine/model/tokenizer.h"

#include <set>

#include "engine/model/json_fields.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace lensd {
namespace {

using testing::SharedDir;

void ExpectCases(const Tokenizer& tok, const std::string& key, bool has_bos) {
  auto text = ReadFileToString(SharedDir() + "/tokenizers/cases.json");
  ASSERT_TRUE(text.ok());
  auto cases = nlohmann::json::parse(*text)["cases"][key];
  ASSERT_EQ(cases.size(), 18u);
  for (const auto& c : cases) {
    const std::string input = c["text"].get<std::string>();
    auto ids = tok.Encode(input);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int>>()) << key << ": " << input;
    std::vector<int> body = *ids;
    if (has_bos && !body.empty()) body.erase(body.begin());
    EXPECT_EQ(tok.Decode(body), c["decoded"].get<std::string>()) << key << ": " << input;
    EXPECT_EQ(tok.Decode(*ids), input) << "decode(encode(x)) round trip for " << input;
  }
}

TEST(Tokenizer, Gpt2VocabAndMerges) {
  LENSD_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  auto tok = LoadGpt2VocabMerges(SharedDir() + "/tokenizers/gpt2/vocab.json",
                                 SharedDir() + "/tokenizers/gpt2/merges.txt");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->VocabSize(), 50257);
  ExpectCases(**tok, "gpt2", false);
}

TEST(Tokenizer, Gpt2TokenizerJson) {
  LENSD_REQUIRE_SHARED("tokenizers/gpt2/tokenizer.json");
  auto tok = LoadHfTokenizerJson(SharedDir() + "/tokenizers/gpt2/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  ExpectCases(**tok, "gpt2", false);
}

// One word of 300k letters: merging pair by pair with a rescan after each merge was
// quadratic (minutes of server CPU for one request, audit item D3); the heap is O(n log n).
// Every 'a' pair merges the same way, so the ids repeat with the period of the longest
// all-'a' token, and the text round-trips.
TEST(Tokenizer, HugeWordEncodesAndRoundTrips) {
  LENSD_REQUIRE_SHARED("tokenizers/gpt2/tokenizer.json");
  auto tok = LoadHfTokenizerJson(SharedDir() + "/tokenizers/gpt2/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string word(300000, 'a');
  auto ids = (*tok)->Encode(word);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_LT(ids->size(), word.size() / 2);
  EXPECT_EQ((*tok)->Decode(*ids), word);
  auto short_ids = (*tok)->Encode(std::string(64, 'a'));
  ASSERT_TRUE(short_ids.ok());
  EXPECT_EQ(std::vector<int>(ids->begin(), ids->begin() + 4),
            std::vector<int>(short_ids->begin(), short_ids->begin() + 4));
}

TEST(Tokenizer, Llama3StyleTokenizerJson) {
  LENSD_REQUIRE_SHARED("tokenizers/llama3style/tokenizer.json");
  auto tok = LoadHfTokenizerJson(SharedDir() + "/tokenizers/llama3style/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  ExpectCases(**tok, "llama3style", true);
}

TEST(Tokenizer, Llama2SentencePieceModel) {
  LENSD_REQUIRE_SHARED("tokenizers/llama2/tokenizer.model");
  auto tok = LoadSentencePiece(SharedDir() + "/tokenizers/llama2/tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->VocabSize(), 32000);
  ExpectCases(**tok, "llama2", true);
}

// A SentencePiece-style tokenizer.json (Llama 2 / Mistral as exported by HF): "▁" for spaces,
// a prepended "▁", and byte fallback for characters outside the vocabulary.
TEST(Tokenizer, SentencePieceStyleJsonWithByteFallback) {
  nlohmann::json j = {
      {"added_tokens", {{{"id", 1}, {"content", "<s>"}, {"special", true}}}},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                                              {{"type", "Replace"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}}}},
      {"model", {{"type", "BPE"}, {"byte_fallback", true},
                 {"vocab", {{"<unk>", 0}, {"<s>", 1}, {"<0xC3>", 2}, {"<0xA9>", 3}, {"\u2581", 4},
                            {"h", 5}, {"i", 6}, {"hi", 7}, {"\u2581hi", 8}}},
                 {"merges", {"h i", "\u2581 hi"}}}}};
  auto tok = ParseHfTokenizerJson(j.dump());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("hi \xC3\xA9");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int>{1, 8, 4, 2, 3}));
  EXPECT_EQ((*tok)->Decode(*ids), "hi \xC3\xA9");
}

TEST(Tokenizer, ByteTokenizerAndErrors) {
  auto t = MakeByteTokenizer();
  EXPECT_EQ(*t->Encode("ab"), (std::vector<int>{1, 100, 101}));
  EXPECT_EQ(t->Decode({1, 100, 101, 2}), "ab");
  EXPECT_EQ(LoadTokenizer("/nonexistent").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(ParseHfTokenizerJson(R"({"model":{"type":"Unigram"}})").ok());
}

}  // namespace
}  // namespace lensd

namespace lensd {
namespace {

std::string Repeat(const std::string& s, int n) {
  std::string out;
  out.reserve(s.size() * n);
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// D6 of the hardening audit: 200k nested Sequence pre-tokenizers, or 200k nested arrays under
// post_processor, overflowed the stack (recursive copies and walks). Both are errors now.
TEST(Tokenizer, DeeplyNestedTokenizerJsonIsAnError) {
  const int n = 200000;
  const std::string head = R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},)";
  const std::string sequences =
      head + R"("pre_tokenizer":)" +
      Repeat(R"({"type":"Sequence","pretokenizers":[)", n) + "null" + Repeat("]}", n) + "}";
  const std::string arrays = head + R"("post_processor":)" + Repeat("[", n) + Repeat("]", n) + "}";
  for (const std::string* text : {&sequences, &arrays}) {
    auto t = ParseHfTokenizerJson(*text);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("nested deeper than"), std::string::npos) << t.status();
  }
  // Brackets inside strings do not count.
  auto quoted = ParseJson(R"({"a":")" + Repeat("[", 1000) + R"("})");
  EXPECT_TRUE(quoted.ok()) << quoted.status();
  EXPECT_FALSE(ParseJson(Repeat("[", 65) + Repeat("]", 65)).ok());
  EXPECT_TRUE(ParseJson(Repeat("[", 64) + Repeat("]", 64)).ok());
}

// The newer families' tokenizer pipelines (Gemma's spaces-to-▁ BPE with byte fallback, Qwen3's
// NFC + split pattern + byte-level BPE, Phi-3's Metaspace BPE with byte fallback), trained anew
// by tools/reference/make_family_tokenizers.py, against Hugging Face `tokenizers` on the shared
// tricky texts and family-specific ones (tests/data/tokenizers/<family>/cases.json).
class FamilyTokenizerTest : public ::testing::TestWithParam<std::pair<std::string, bool>> {};

TEST_P(FamilyTokenizerTest, IdsAndDecodingMatchHuggingFaceTokenizers) {
  const auto& [family, has_bos] = GetParam();
  const std::string dir = testing::GoldenDir() + "/../tokenizers/" + family;
  auto tok = LoadHfTokenizerJson(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto text = ReadFileToString(dir + "/cases.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const auto cases = nlohmann::json::parse(*text)["cases"];
  // The reference decodes with skip_special_tokens: drop the special added tokens (BOS too).
  auto spec = ReadFileToString(dir + "/tokenizer.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::set<int> special;
  const nlohmann::json parsed = nlohmann::json::parse(*spec);
  for (const auto& a : parsed["added_tokens"]) {
    if (a["special"].get<bool>()) special.insert(a["id"].get<int>());
  }
  ASSERT_GE(cases.size(), 27u);
  for (const auto& c : cases) {
    const std::string input = c["text"].get<std::string>();
    auto ids = tok.value()->Encode(input);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int>>()) << family << ": " << input;
    std::vector<int> body;
    for (int id : *ids) {
      if (!special.count(id)) body.push_back(id);
    }
    if (has_bos) {
      EXPECT_TRUE(!ids->empty() && special.count(ids->front()) == 1) << family << ": BOS";
    }
    EXPECT_EQ(tok.value()->Decode(body), c["decoded"].get<std::string>())
        << family << ": " << input;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyTokenizerTest,
                         ::testing::Values(std::pair{std::string("gemma"), true},
                                           std::pair{std::string("qwen3"), false},
                                           std::pair{std::string("phi3"), true},
                                           std::pair{std::string("olmo2"), false}),
                         [](const auto& info) { return info.param.first; });

}  // namespace
}  // namespace lensd
