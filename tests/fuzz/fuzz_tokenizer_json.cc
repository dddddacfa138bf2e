// libFuzzer target: tokenizer.json files, and text through whatever tokenizer they describe.
// The input is split at the first 0 byte: tokenizer.json before it, text to encode after.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "engine/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* bytes = reinterpret_cast<const char*>(data);
  const char* split = static_cast<const char*>(std::memchr(bytes, 0, size));
  const size_t json_size = split ? static_cast<size_t>(split - bytes) : size;
  auto tokenizer = lensd::ParseHfTokenizerJson(std::string_view(bytes, json_size));
  if (!tokenizer.ok() || split == nullptr) return 0;
  auto ids = (*tokenizer)->Encode(std::string_view(split + 1, size - json_size - 1));
  if (ids.ok()) (void)(*tokenizer)->Decode(*ids);
  return 0;
}
