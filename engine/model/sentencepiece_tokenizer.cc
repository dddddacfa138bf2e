// tokenizer.model through libsentencepiece, with BOS prepended as Llama 2 / Mistral do.
#include "absl/strings/str_cat.h"
#include "engine/model/sentencepiece_model.h"
#include "engine/model/tokenizer.h"

namespace lensd {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceModel> sp) : sp_(std::move(sp)) {}

  absl::StatusOr<std::vector<int>> Encode(std::string_view text) const override {
    std::vector<int> ids;
    std::string error = sp_->Encode(std::string(text), &ids);
    if (!error.empty()) return absl::InvalidArgumentError(error);
    if (sp_->bos_id() >= 0) ids.insert(ids.begin(), sp_->bos_id());
    return ids;
  }

  std::string Decode(const std::vector<int>& ids) const override {
    std::vector<int> valid;
    for (int id : ids) {
      if (id >= 0 && id < sp_->size()) valid.push_back(id);
    }
    return sp_->Decode(valid);
  }

  int VocabSize() const override { return sp_->size(); }

 private:
  std::unique_ptr<SentencePieceModel> sp_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::string& model_path) {
  auto sp = std::make_unique<SentencePieceModel>();
  std::string error = sp->Load(model_path);
  if (!error.empty()) return absl::InvalidArgumentError(absl::StrCat(model_path, ": ", error));
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(sp)));
}

}  // namespace lensd
