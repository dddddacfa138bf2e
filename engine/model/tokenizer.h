// Text <-> token ids. Implementations: BpeTokenizer (tokenizer.json, vocab.json+merges.txt),
// SentencePieceTokenizer (tokenizer.model) and ByteTokenizer (the built-in model).
// All are immutable after construction and safe to share across threads.
#ifndef LENSD_ENGINE_MODEL_TOKENIZER_H_
#define LENSD_ENGINE_MODEL_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lensd {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text; prepends BOS when the tokenizer's own post-processing does (Llama 2/3 style),
  // never for GPT-2. Errors only on inputs the vocabulary cannot represent.
  virtual absl::StatusOr<std::vector<int>> Encode(std::string_view text) const = 0;
  // Concatenates the pieces' text. Control tokens (BOS) render as empty strings for
  // SentencePiece models, and as their literal text otherwise. Ids outside the vocabulary
  // render as nothing.
  virtual std::string Decode(const std::vector<int>& ids) const = 0;
  virtual int VocabSize() const = 0;
};

// Looks for tokenizer.json, then tokenizer.model, then vocab.json+merges.txt in `dir`.
// NotFound when none exists (the model is then usable with token ids only).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir);

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizerJson(const std::string& path);
absl::StatusOr<std::unique_ptr<Tokenizer>> ParseHfTokenizerJson(std::string_view json_text);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGpt2VocabMerges(const std::string& vocab_path,
                                                                const std::string& merges_path);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::string& model_path);

// Bytes as tokens: id = byte + 3; 0 = pad, 1 = BOS (prepended), 2 = EOS. Vocabulary 259.
std::unique_ptr<Tokenizer> MakeByteTokenizer();

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_TOKENIZER_H_
