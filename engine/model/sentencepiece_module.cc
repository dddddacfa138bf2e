// The only code that touches libsentencepiece, built as a separate shared module. Debian's
// libsentencepiece exports its own bundled copy of protobuf; linked into a binary that also
// uses libprotobuf (the gRPC server and clients), the two copies interpose each other and
// crash at start-up. SentencePieceModel therefore dlopens this module with RTLD_LOCAL |
// RTLD_DEEPBIND, so sentencepiece binds to its own protobuf and nothing else sees it.
// The entry points use C linkage (stable names for dlsym) with std types, which is safe
// because the module and its loader share one libstdc++.
#include <sentencepiece_processor.h>

#include <string>
#include <vector>

extern "C" {

void* lensd_spm_new() { return new sentencepiece::SentencePieceProcessor(); }

void lensd_spm_free(void* sp) { delete static_cast<sentencepiece::SentencePieceProcessor*>(sp); }

void lensd_spm_load(void* sp, const std::string* path, std::string* error) {
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Load(*path);
  *error = status.ok() ? "" : status.ToString();
}

void lensd_spm_encode(const void* sp, const std::string* text, std::vector<int>* ids,
                      std::string* error) {
  auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(sp)->Encode(*text, ids);
  *error = status.ok() ? "" : status.ToString();
}

void lensd_spm_decode(const void* sp, const std::vector<int>* ids, std::string* out) {
  static_cast<const sentencepiece::SentencePieceProcessor*>(sp)->Decode(*ids, out).IgnoreError();
}

int lensd_spm_size(const void* sp) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(sp)->GetPieceSize();
}

int lensd_spm_bos_id(const void* sp) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(sp)->bos_id();
}

}  // extern "C"
