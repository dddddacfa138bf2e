// libFuzzer target: config.json text must parse into a plausible architecture or an error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/model/config.h"
#include "engine/runtime/hooks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto c = lensd::ParseModelConfig(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  if (c.ok()) (void)lensd::AllHooks(*c).size();  // the architecture's hooks are derivable
  return 0;
}
