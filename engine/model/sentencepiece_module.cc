// The only code that touches libsentencepiece, built as a separate shared module and loaded
// into a link-map namespace of its own (dlmopen, see SentencePieceModel). Debian's
// libsentencepiece exports its own bundled copy of protobuf; in the namespace of a binary
// that also uses libprotobuf (the gRPC server and clients) the two copies would interpose
// each other and crash. Its own namespace has its own libc and libstdc++, so the entry points
// take and return only C types: caller-owned buffers, never std objects or heap memory
// crossing the boundary. (RTLD_DEEPBIND did the same job, but sanitizers refuse it.)
#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

// Copies `s` into out[0, cap), NUL-terminated when there is room; returns s.size().
size_t CopyOut(const std::string& s, char* out, size_t cap) {
  if (cap > 0) {
    const size_t n = s.size() < cap - 1 ? s.size() : cap - 1;
    std::memcpy(out, s.data(), n);
    out[n] = '\0';
  }
  return s.size();
}

}  // namespace

extern "C" {

// The loaded model, or null with the library's message in error[0, error_cap).
void* lensd_spm_load(const char* path, char* error, size_t error_cap) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (status.ok()) return sp;
  CopyOut(status.ToString(), error, error_cap);
  delete sp;
  return nullptr;
}

void lensd_spm_free(void* sp) { delete static_cast<sentencepiece::SentencePieceProcessor*>(sp); }

// Writes up to `cap` ids and returns how many the text has (call again with more room when
// that exceeds cap), or -1 with the message in error[0, error_cap).
long lensd_spm_encode(const void* sp, const char* text, size_t len, int* ids, size_t cap,
                      char* error, size_t error_cap) {
  std::vector<int> out;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(sp)->Encode(
      std::string(text, len), &out);
  if (!status.ok()) {
    CopyOut(status.ToString(), error, error_cap);
    return -1;
  }
  std::memcpy(ids, out.data(), (out.size() < cap ? out.size() : cap) * sizeof(int));
  return static_cast<long>(out.size());
}

// Writes up to `cap` bytes of the decoded text; returns its full length.
size_t lensd_spm_decode(const void* sp, const int* ids, size_t n, char* out, size_t cap) {
  std::string text;
  static_cast<const sentencepiece::SentencePieceProcessor*>(sp)
      ->Decode(std::vector<int>(ids, ids + n), &text)
      .IgnoreError();
  if (cap > 0) std::memcpy(out, text.data(), text.size() < cap ? text.size() : cap);
  return text.size();
}

int lensd_spm_size(const void* sp) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(sp)->GetPieceSize();
}

int lensd_spm_bos_id(const void* sp) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(sp)->bos_id();
}

}  // extern "C"
