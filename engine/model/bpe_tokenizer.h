// Byte-pair encoding as Hugging Face tokenizers and GPT-2's encoder define it: byte-level
// (GPT-2, Llama 3, Qwen2) or SentencePiece-style over characters with byte fallback (Llama 2).
#ifndef LENSD_ENGINE_MODEL_BPE_TOKENIZER_H_
#define LENSD_ENGINE_MODEL_BPE_TOKENIZER_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/model/tokenizer.h"

namespace lensd {

// Unicode normalization of each segment of text between added tokens (a tokenizer.json
// normalizer).
enum class TextNormalization { kNone, kNfc, kNfkc };

// When a SentencePiece-style tokenizer puts "▁" before a segment of text (between added tokens):
enum class SpacePrepend {
  kNever,
  kEverySegment,      // the Prepend normalizer: before every non-empty segment
  kUnlessSpace,       // Metaspace "always": unless the segment starts with "▁" already
  kFirstUnlessSpace,  // Metaspace "first": only the segment at the start of the text, likewise
};

struct BpeSpec {
  std::vector<std::string> id_to_token;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  bool byte_level = true;           // GPT-2 byte->unicode mapping of every piece
  std::string split_pattern;        // PCRE2 (UTF, UCP) pattern; empty = the whole text is one piece
  bool add_prefix_space = false;    // byte-level: prepend " " when the text does not start with one
  bool byte_fallback = false;       // unknown symbols become <0xXX> tokens
  bool space_marker = false;        // SentencePiece style: " " -> "▁"
  SpacePrepend prepend = SpacePrepend::kNever;  // SentencePiece style: "▁" before the text
  TextNormalization normalization = TextNormalization::kNone;
  int unk_id = -1;
  int bos_id = -1;                  // prepended to every encoding when >= 0
  std::vector<std::pair<std::string, int>> added_tokens;  // matched verbatim before BPE
};

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeBpeTokenizer(BpeSpec spec);

// The GPT-2 split pattern (also used by ByteLevel pre-tokenizers with use_regex=true).
extern const char kGpt2SplitPattern[];

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_BPE_TOKENIZER_H_
