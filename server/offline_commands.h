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

namespace lensd {

absl::Status RunCommand(const std::vector<std::string>& args, std::ostream& out);
absl::Status GenerateCommand(const std::vector<std::string>& args, std::ostream& out);

// Flag names shared by the commands of lensd and lensctl.
const std::set<std::string>& ModelFlagNames();
const std::set<std::string>& SamplingFlagNames();
std::set<std::string> FlagUnion(std::initializer_list<std::set<std::string>> sets);

// Shared by lensd and lensctl so both print and write exactly the same things.
absl::StatusOr<LoadOptions> LoadOptionsFromFlags(const Flags& flags);
absl::StatusOr<SamplingParams> SamplingFromFlags(const Flags& flags);
// --prompt through the tokenizer, or --token-ids; exactly one must be given.
absl::StatusOr<std::vector<int32_t>> PromptIds(const Flags& flags, const Tokenizer* tokenizer);
// "ids\ntext\n" — the generate output format.
std::string FormatGeneration(const std::vector<int32_t>& ids, const Tokenizer* tokenizer);
std::string FormatGeneration(const std::vector<int32_t>& ids, const std::string& text);
// Writes hooks + logits [1,P,V] + input_ids [1,P] (int32) as safetensors.
absl::Status WriteCacheFile(const std::string& path, const std::vector<int32_t>& ids,
                            const CacheResult& result);

}  // namespace lensd

#endif  // LENSD_SERVER_OFFLINE_COMMANDS_H_
