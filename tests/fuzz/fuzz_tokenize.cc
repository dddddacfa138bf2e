// libFuzzer target: arbitrary text through real tokenizers (GPT-2 byte-level BPE, the Llama 3
// style BPE, Llama 2's SentencePiece model from ../shared when present, the byte tokenizer),
// then ids (the same bytes read as int32) through Decode. Encode must return ids or an error;
// decode(encode(x)) must give x back on the byte-level tokenizers.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/tokenizer.h"

namespace {

struct Tokenizers {
  std::vector<std::unique_ptr<lensd::Tokenizer>> all;
  size_t round_trips = 0;  // the first round_trips of `all` must reproduce their input
};

const Tokenizers& Get() {
  static const Tokenizers* t = [] {
    auto* out = new Tokenizers();
    const char* env = std::getenv("LENSD_SHARED_DIR");
    const std::string shared = env != nullptr ? env : LENSD_SHARED_DIR;
    for (const char* path : {"/tokenizers/gpt2/tokenizer.json", "/tokenizers/llama3style/tokenizer.json"}) {
      auto tok = lensd::LoadHfTokenizerJson(shared + path);
      if (tok.ok()) out->all.push_back(std::move(*tok)), ++out->round_trips;
    }
    out->all.push_back(lensd::MakeByteTokenizer());
    ++out->round_trips;
    auto spm = lensd::LoadSentencePiece(shared + "/tokenizers/llama2/tokenizer.model");
    if (spm.ok()) out->all.push_back(std::move(*spm));
    return out;
  }();
  return *t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<int> junk(size / 4);
  if (!junk.empty()) std::memcpy(junk.data(), data, junk.size() * 4);
  const Tokenizers& t = Get();
  for (size_t i = 0; i < t.all.size(); ++i) {
    auto ids = t.all[i]->Encode(text);
    (void)t.all[i]->Decode(junk);
    if (!ids.ok()) continue;
    const std::string back = t.all[i]->Decode(*ids);
    // Lossless tokenizers must give the text back (special tokens such as <|begin_of_text|>
    // in the text are exempt: Decode drops the BOS id wherever it stands).
    if (i < t.round_trips && back != text && text.find("<|") == std::string::npos) std::abort();
  }
  return 0;
}
