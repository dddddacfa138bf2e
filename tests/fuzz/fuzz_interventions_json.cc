// libFuzzer target: --interventions files, parsed to the wire form and validated against the
// built-in model for two prompts (RunWithCache) and one (Generate).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cli/interventions_json.h"
#include "engine/model/weights.h"
#include "server/interventions_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const lensd::ModelConfig* config = new lensd::ModelConfig(lensd::BuiltinConfig());
  lensd::WireInterventions wire;
  if (!lensd::ParseInterventionsJson(std::string_view(reinterpret_cast<const char*>(data), size),
                                     "/nonexistent", &wire)
           .ok()) {
    return 0;
  }
  const lensd::InterventionLimits limits;
  (void)lensd::ToInterventionSet(wire, *config, {5, 9}, false, 0, limits).ok();
  (void)lensd::ToInterventionSet(wire, *config, {5}, true, 40, limits).ok();
  return 0;
}
