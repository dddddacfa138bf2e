// The request half of the command lines, shared by lensd's offline commands and lensctl so
// that both parse, print and write exactly the same things: the flag tables of a request
// (sampling, prompts, interventions, a cache request), their values as the wire messages the
// server takes, and the outputs (generation text, cache files). Nothing here loads a model.
#ifndef LENSD_CLI_REQUEST_FLAGS_H_
#define LENSD_CLI_REQUEST_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cli/flags.h"
#include "engine/core/cache_result.h"
#include "lensd/v1/lensd.pb.h"

namespace lensd {

const FlagTable& SamplingFlags();      // generation: --max-new-tokens, --temperature, ...
const FlagTable& PromptFlags();        // --prompt, --token-ids (repeatable)
const FlagTable& InterventionFlags();  // --interventions FILE.json
const FlagTable& CacheFlags();         // a cache request: prompts, --out, --hooks, --interventions

// --max-new-tokens and the sampling flags into `request`, every field set (the flags' defaults
// where absent); the values are checked where every request's are (the server's edge, or the
// offline command's conversion).
absl::Status SamplingFromFlags(const Flags& flags, v1::GenerateRequest* request);

// Comma-separated integers (a part of flag --<flag>'s value) appended to `out`; at least one.
absl::Status IdsFromFlag(const std::string& flag, absl::string_view text,
                         google::protobuf::RepeatedField<int32_t>* out);

// --grad: "loss", "logit_diff:A:W" or "logprob:I,J" (A, W, I, J: comma-separated token
// ids), with an optional "@p,q" suffix of positions, as the wire's Objective; INVALID_ARGUMENT
// saying what is wrong (the ids and positions are checked where the model is known).
absl::Status ObjectiveFromFlag(const std::string& text, v1::Objective* out);

// Every --prompt TEXT / --token-ids 1,2,3 in command-line order (at least one).
struct PromptArg {
  bool text = false;
  std::string value;
  std::vector<int> ids;  // parsed --token-ids
};
absl::StatusOr<std::vector<PromptArg>> PromptArgs(const Flags& flags);

// "ids\ntext\n" — the generate output format.
std::string FormatGeneration(const std::vector<int32_t>& ids, const std::string& text);
// Writes hooks (and gradients "<hook>_grad") + logits [1,P,V] + input_ids [1,P] (int32) +
// objective [1] (with gradients) as safetensors; with several prompts every name of prompt i
// is prefixed "p{i}." (p0.logits, p1.blocks.0.hook_z, ...).
absl::Status WriteCacheFile(const std::string& path,
                            const std::vector<std::vector<int32_t>>& prompts,
                            const std::vector<CacheResult>& results);
// The line both CLIs print after writing it.
std::string CacheSummary(const std::string& path, const std::vector<std::vector<int32_t>>& prompts,
                         const std::vector<CacheResult>& results);

}  // namespace lensd

#endif  // LENSD_CLI_REQUEST_FLAGS_H_
