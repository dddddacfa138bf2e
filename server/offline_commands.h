// `lensd run` and `lensd generate`: the offline halves of the CLI contract in DESIGN.md.
#ifndef LENSD_SERVER_OFFLINE_COMMANDS_H_
#define LENSD_SERVER_OFFLINE_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "server/cli_flags.h"

namespace lensd {

absl::Status RunCommand(const std::vector<std::string>& args, std::ostream& out);
absl::Status GenerateCommand(const std::vector<std::string>& args, std::ostream& out);

// Shared by lensd and lensctl so both print and write exactly the same things.
absl::StatusOr<LoadOptions> LoadOptionsFromFlags(const Flags& flags);
absl::StatusOr<SamplingParams> SamplingFromFlags(const Flags& flags);
// --prompt through the tokenizer, or --token-ids; exactly one must be given.
absl::StatusOr<std::vector<int32_t>> PromptIds(const Flags& flags, const Tokenizer* tokenizer);
// "ids\ntext\n" — the generate output format.
std::string FormatGeneration(const std::vector<int32_t>& ids, const Tokenizer* tokenizer);
// Writes hooks + logits [1,P,V] + input_ids [1,P] (int32) as safetensors.
absl::Status WriteCacheFile(const std::string& path, const std::vector<int32_t>& ids,
                            const CacheResult& result);

}  // namespace lensd

#endif  // LENSD_SERVER_OFFLINE_COMMANDS_H_
