// libFuzzer target: safetensors images (header JSON, shapes, offsets) must parse or fail with
// an error; every accepted tensor's byte range must be readable.
#include <cstddef>
#include <cstdint>

#include "engine/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = lensd::SafetensorsFile::Parse(data, size, "fuzz.safetensors");
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& [name, info] : (*file)->tensors()) {
    const auto* bytes = static_cast<const uint8_t*>(info.data);
    for (size_t i = 0; i < info.num_bytes; ++i) sink ^= bytes[i];
  }
  return 0;
}
