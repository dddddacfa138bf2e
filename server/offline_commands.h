// `lensd run` and `lensd generate`: the offline halves of the CLI contract in DESIGN.md.
#ifndef LENSD_SERVER_OFFLINE_COMMANDS_H_
#define LENSD_SERVER_OFFLINE_COMMANDS_H_

#include <initializer_list>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "server/cli_flags.h"
#include "server/interventions_json.h"

namespace lensd {

absl::Status RunCommand(const std::vector<std::string>& args, std::ostream& out);
absl::Status GenerateCommand(const std::vector<std::string>& args, std::ostream& out);

// Flags shared by the commands of lensd and lensctl (parsing and --help from one table).
const FlagTable& ModelFlags();     // loading: --model, --devices, --dtype, ...
const FlagTable& SamplingFlags();  // generation: --max-new-tokens, --temperature, ...
const FlagTable& PromptFlags();    // --prompt, --token-ids (repeatable)
const FlagTable& InterventionFlags();  // --interventions FILE.json
const FlagTable& CacheFlags();     // a cache request: prompts, --out, --hooks, --interventions
FlagTable RunFlags();              // lensd run
FlagTable GenerateFlags();         // lensd generate

// Shared by lensd and lensctl so both print and write exactly the same things.
absl::StatusOr<LoadOptions> LoadOptionsFromFlags(const Flags& flags);
absl::StatusOr<SamplingParams> SamplingFromFlags(const Flags& flags);
// Every --prompt TEXT / --token-ids 1,2,3 in command-line order (at least one).
struct PromptArg {
  bool text = false;
  std::string value;
  std::vector<int> ids;  // parsed --token-ids
};
absl::StatusOr<std::vector<PromptArg>> PromptArgs(const Flags& flags);
// Their token ids, text through `tokenizer`.
absl::StatusOr<std::vector<std::vector<int32_t>>> PromptIds(const Flags& flags,
                                                            const Tokenizer* tokenizer);
// --interventions FILE.json, validated for these prompts (null without the flag).
absl::StatusOr<std::shared_ptr<const InterventionSet>> InterventionsFromFlags(
    const Flags& flags, const ModelConfig& c, const std::vector<int>& prompt_lengths,
    bool generate, int max_tokens);
// "ids\ntext\n" — the generate output format.
std::string FormatGeneration(const std::vector<int32_t>& ids, const Tokenizer* tokenizer);
std::string FormatGeneration(const std::vector<int32_t>& ids, const std::string& text);
// Writes hooks + logits [1,P,V] + input_ids [1,P] (int32) as safetensors; with several
// prompts every name of prompt i is prefixed "p{i}." (p0.logits, p1.blocks.0.hook_z, ...).
absl::Status WriteCacheFile(const std::string& path,
                            const std::vector<std::vector<int32_t>>& prompts,
                            const std::vector<CacheResult>& results);
// The line both CLIs print after writing it.
std::string CacheSummary(const std::string& path, const std::vector<std::vector<int32_t>>& prompts,
                         const std::vector<CacheResult>& results);

}  // namespace lensd

#endif  // LENSD_SERVER_OFFLINE_COMMANDS_H_
