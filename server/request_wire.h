// Parts of requests on the wire -> the engine's validated values: sampling parameters and
// gradient objectives. Shared by the RPC edge and lensd's offline commands (whose flags
// build the same messages, cli/request_flags.h), so both check the same things once.
#ifndef LENSD_SERVER_REQUEST_WIRE_H_
#define LENSD_SERVER_REQUEST_WIRE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/objective.h"
#include "engine/runtime/sampler.h"
#include "lensd/v1/lensd.pb.h"

namespace lensd {

// InvalidArgument "<field>[i] = id is outside the vocabulary [0, vocab)" for the first bad id.
absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, int vocab,
                           const std::string& field);
// A list of ids that must not be empty ("<field> is empty"), checked as CheckTokenIds, into `out`.
absl::Status TokenIdList(const google::protobuf::RepeatedField<int32_t>& ids, int vocab,
                         const std::string& field, std::vector<int>& out);

// Unset fields keep the engine's defaults; INVALID_ARGUMENT naming "sampling.<field>".
// max_new_tokens is the caller's (its bounds differ between the server and the CLI).
absl::StatusOr<SamplingParams> ToSampling(const v1::SamplingParams& s);

// INVALID_ARGUMENT naming "objective.<field>": no kind, ids outside the vocabulary, positions
// outside a prompt (every prompt of `prompt_lengths`), a loss of a one-token prompt.
absl::StatusOr<Objective> ToObjective(const v1::Objective& o, int vocab,
                                      const std::vector<int>& prompt_lengths);
// With the model: also hook_dot (its hook and direction checked, CheckObjective).
absl::StatusOr<Objective> ToObjective(const v1::Objective& o, const ModelConfig& c,
                                      const std::vector<int>& prompt_lengths);

}  // namespace lensd

#endif  // LENSD_SERVER_REQUEST_WIRE_H_
