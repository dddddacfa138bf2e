#include "engine/model/sentencepiece_model.h"

#include <sentencepiece_processor.h>

namespace lensd {

struct SentencePieceModel::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceModel::SentencePieceModel() : impl_(std::make_unique<Impl>()) {}
SentencePieceModel::~SentencePieceModel() = default;

std::string SentencePieceModel::Load(const std::string& path) {
  auto status = impl_->sp.Load(path);
  return status.ok() ? "" : status.ToString();
}

std::string SentencePieceModel::Encode(const std::string& text, std::vector<int>* ids) const {
  auto status = impl_->sp.Encode(text, ids);
  return status.ok() ? "" : status.ToString();
}

std::string SentencePieceModel::Decode(const std::vector<int>& ids) const {
  std::string out;
  impl_->sp.Decode(ids, &out).IgnoreError();
  return out;
}

int SentencePieceModel::size() const { return impl_->sp.GetPieceSize(); }
int SentencePieceModel::bos_id() const { return impl_->sp.bos_id(); }

}  // namespace lensd
