// A thin std-only wrapper over libsentencepiece. It lives in its own translation unit
// because sentencepiece_processor.h declares `absl::string_view`, which collides with
// Debian's abseil; this header and its .cc therefore include no abseil headers.
#ifndef LENSD_ENGINE_MODEL_SENTENCEPIECE_MODEL_H_
#define LENSD_ENGINE_MODEL_SENTENCEPIECE_MODEL_H_

#include <memory>
#include <string>
#include <vector>

namespace lensd {

class SentencePieceModel {
 public:
  // Empty string on success, else the library's message.
  std::string Load(const std::string& path);
  std::string Encode(const std::string& text, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids) const;  // ids must be < size()
  int size() const;
  int bos_id() const;
  SentencePieceModel();
  ~SentencePieceModel();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_SENTENCEPIECE_MODEL_H_
