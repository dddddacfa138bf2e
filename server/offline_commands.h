// `lensd run` and `lensd generate`: the offline halves of the CLI contract in DESIGN.md.
#ifndef LENSD_SERVER_OFFLINE_COMMANDS_H_
#define LENSD_SERVER_OFFLINE_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/flags.h"
#include "cli/interventions_json.h"
#include "cli/request_flags.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "engine/runtime/sae.h"

namespace lensd {

absl::Status RunCommand(const std::vector<std::string>& args, std::ostream& out);
absl::Status GenerateCommand(const std::vector<std::string>& args, std::ostream& out);

// lensd's own flag tables; the request flags (sampling, prompts, ...) are cli/request_flags.h.
const FlagTable& ModelFlags();  // loading: --model, --devices, --dtype, ...
FlagTable RunFlags();           // lensd run
// The --sae arguments loaded for `model`.
absl::StatusOr<SaeSet> SaesFromFlags(const Flags& flags, const Model& model);
FlagTable GenerateFlags();      // lensd generate

absl::StatusOr<LoadOptions> LoadOptionsFromFlags(const Flags& flags);
// The sampling flags as the server would take them in a GenerateRequest, --max-new-tokens >= 0.
absl::StatusOr<SamplingParams> GenerateSampling(const Flags& flags);
// The prompts' token ids, text through `tokenizer`.
absl::StatusOr<std::vector<std::vector<int32_t>>> PromptIds(const Flags& flags,
                                                            const Tokenizer* tokenizer);
// --interventions FILE.json as on the wire (empty without the flag).
absl::StatusOr<WireInterventions> WireInterventionsFromFlags(const Flags& flags);
// FormatGeneration with the text decoded by `tokenizer` (none: empty).
std::string FormatGeneration(const std::vector<int32_t>& ids, const Tokenizer* tokenizer);

}  // namespace lensd

#endif  // LENSD_SERVER_OFFLINE_COMMANDS_H_
