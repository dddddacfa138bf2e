// Interventions on the wire (v1::Intervention) -> the engine's validated InterventionSet.
// Shared by the RPC edge and the CLIs (which build the same messages from JSON files), so
// every path checks the same things once.
#ifndef LENSD_SERVER_INTERVENTIONS_WIRE_H_
#define LENSD_SERVER_INTERVENTIONS_WIRE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/interventions_json.h"
#include "engine/runtime/interventions.h"
#include "lensd/v1/lensd.pb.h"

namespace lensd {

struct InterventionLimits {
  int max_interventions = 256;                  // per request
  int64_t max_bytes = int64_t{64} << 20;        // value bytes per request
};

// RESOURCE_EXHAUSTED over the limits (checked first, before decoding anything);
// INVALID_ARGUMENT naming "interventions[i].<field>" for a malformed tensor, an unknown hook
// or anything InterventionSet::Create refuses. Null when the list is empty.
// Entries that edit an attached SAE's features (IsFeatureEdit) are left out: sae_wire.h takes
// them.
absl::StatusOr<std::shared_ptr<const InterventionSet>> ToInterventionSet(
    const WireInterventions& list, const ModelConfig& c, const std::vector<int>& prompt_lengths,
    bool generate, int max_tokens, const InterventionLimits& limits);

// An intervention at "<hook>.hook_sae_acts_post": a feature edit of the SAE attached there.
inline constexpr char kFeatureHookSuffix[] = ".hook_sae_acts_post";
bool IsFeatureEdit(const v1::Intervention& w);

// A wire tensor as float32 (errors name `field`); a wire position selector.
absl::StatusOr<FloatTensor> ToFloatTensor(const v1::Tensor& t, const std::string& field);
PositionSelector ToSelector(const v1::Positions& p);

}  // namespace lensd

#endif  // LENSD_SERVER_INTERVENTIONS_WIRE_H_
