// A request's SAEs on the wire -> attachments: RunWithCacheRequest.saes (by name, from the
// server's --sae set) and the feature edits among its interventions (entries at an attached
// SAE's "<hook>.hook_sae_acts_post", or "<SAE name>.hook_sae_acts_post", with `features`),
// validated once here.
#ifndef LENSD_SERVER_SAE_WIRE_H_
#define LENSD_SERVER_SAE_WIRE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/sae.h"
#include "lensd/v1/lensd.pb.h"
#include "server/interventions_wire.h"

namespace lensd {

// INVALID_ARGUMENT "saes[i]: no SAE named ..." (listing the loaded ones; `loaded` may be
// null), "interventions[i]...: ..." for a feature edit at a hook no requested SAE sits at, a
// feature out of range, an op other than zero/scale/set/add, heads or keys, bad values or
// positions. `prompt_lengths`: the request's prompts; `generate`: Generate's one prompt, whose
// positions reach `max_tokens` (positions may then select "generated" ones).
absl::StatusOr<AttachmentList> ToAttachments(
    const google::protobuf::RepeatedPtrField<v1::SaeAttach>& saes,
    const WireInterventions& interventions, const SaeSet* loaded,
    const std::vector<int>& prompt_lengths, bool generate = false, int max_tokens = 0);

}  // namespace lensd

#endif  // LENSD_SERVER_SAE_WIRE_H_
