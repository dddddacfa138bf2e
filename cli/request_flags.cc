#include "cli/request_flags.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/interventions_json.h"
#include "engine/core/status.h"
#include "engine/core/user_text.h"
#include "engine/model/safetensors.h"

namespace lensd {

const FlagTable& SamplingFlags() {
  static const auto* table = new FlagTable{
      {"max-new-tokens", "16", "tokens to generate at most"},
      {"temperature", "0", "0 is greedy"},
      {"top-k", "0", "keep the k most likely tokens (0: off)"},
      {"top-p", "1", "nucleus sampling mass, in (0, 1]"},
      {"min-p", "0", "drop tokens below min-p times the top probability"},
      {"seed", "0", "sampling seed"},
      {"repetition-penalty", "1", "Hugging Face semantics, over prompt and output"},
      {"frequency-penalty", "0", "OpenAI semantics, over the output"},
      {"presence-penalty", "0", "OpenAI semantics, over the output"},
      {"stop-ids", "", "token ids that end generation (as well as the model's EOS), e.g. 13,198"},
      {"ignore-eos", "", "keep generating past EOS", true},
  };
  return *table;
}

const FlagTable& PromptFlags() {
  static const auto* table = new FlagTable{
      {"prompt", "", "prompt text (repeat for several prompts)"},
      {"token-ids", "", "prompt as token ids, e.g. 1,2,3 (repeatable, mixes with --prompt)"},
  };
  return *table;
}

const FlagTable& InterventionFlags() {
  static const auto* table = new FlagTable{
      {"interventions", "",
       "a JSON list of interventions (README, Interventions); generation "
       "applies them at every step"},
  };
  return *table;
}

const FlagTable& CacheFlags() {
  static const auto* table = new FlagTable(
      Concat({PromptFlags(),
              {{"out", "", "the safetensors file to write (required)"},
               {"grad", "",
                "an objective — loss, logit_diff:A:W, logprob:I,J (token ids "
                "comma-separated) or hook_dot:HOOK:FILE.safetensors:TENSOR, optional "
                "@positions — whose gradient is written as <hook>_grad beside each hook, "
                "with `objective`"},
               {"hooks", "",
                "hook names, globs and layer ranges, comma-separated, e.g. "
                "blocks.*.hook_resid_post,blocks.0-3.attn.hook_pattern (default: every hook)"}},
              InterventionFlags()}));
  return *table;
}

absl::StatusOr<std::vector<PromptArg>> PromptArgs(const Flags& flags) {
  std::vector<PromptArg> out;
  for (const auto& [name, value] : flags.Occurrences({"prompt", "token-ids"})) {
    PromptArg arg{name == "prompt", value, {}};
    if (!arg.text) {
      ASSIGN_OR_RETURN(arg.ids, ParseIntList(name, value));
    }
    out.push_back(std::move(arg));
  }
  if (out.empty()) return absl::InvalidArgumentError("give --prompt TEXT or --token-ids 1,2,3");
  return out;
}

std::string FormatGeneration(const std::vector<int32_t>& ids, const std::string& text) {
  return absl::StrCat(absl::StrJoin(ids, " "), "\n", text, "\n");
}

absl::Status WriteCacheFile(const std::string& path,
                            const std::vector<std::vector<int32_t>>& prompts,
                            const std::vector<CacheResult>& results) {
  SafetensorsWriter w;
  for (size_t p = 0; p < results.size(); ++p) {
    const std::string prefix = results.size() == 1 ? "" : absl::StrCat("p", p, ".");
    for (const auto& [name, buffer] : results[p].cache) w.AddF32(prefix + name, buffer.view());
    w.AddF32(prefix + "logits", results[p].logits.view());
    if (results[p].objective.has_value()) {
      float value = static_cast<float>(*results[p].objective);
      w.AddF32(prefix + "objective", {&value, DType::kF32, {1}});
    }
    w.Add(prefix + "input_ids", DType::kI32, {1, static_cast<int64_t>(prompts[p].size())},
          prompts[p].data(), prompts[p].size() * sizeof(int32_t));
  }
  return w.WriteFile(path);
}

std::string CacheSummary(const std::string& path, const std::vector<std::vector<int32_t>>& prompts,
                         const std::vector<CacheResult>& results) {
  size_t tokens = 0;
  for (const auto& ids : prompts) tokens += ids.size();
  const std::string what =
      prompts.size() == 1 ? "" : absl::StrCat(" of ", prompts.size(), " prompts");
  size_t grads = 0;
  for (const auto& entry : results[0].cache) grads += absl::EndsWith(entry.first, "_grad");
  const std::string with_grads =
      grads == 0 ? "" : absl::StrCat(", ", grads, " gradients, the objective");
  return absl::StrCat("wrote ", results[0].cache.size() - grads, " hooks", with_grads,
                      " + logits for ", tokens, " tokens", what, " to ", path, "\n");
}

absl::Status IdsFromFlag(const std::string& flag, absl::string_view text,
                         google::protobuf::RepeatedField<int32_t>* out) {
  ASSIGN_OR_RETURN(std::vector<int> values, ParseIntList(flag, std::string(text)));
  if (values.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": a list of ids is empty"));
  }
  out->Add(values.begin(), values.end());
  return absl::OkStatus();
}

absl::Status ObjectiveFromFlag(const std::string& text, v1::Objective* out) {
  std::vector<absl::string_view> at = absl::StrSplit(text, absl::MaxSplits('@', 1));
  std::vector<absl::string_view> parts = absl::StrSplit(at[0], ':');
  if (parts[0] == "loss" && parts.size() == 1) {
    out->mutable_loss();
  } else if (parts[0] == "logit_diff" && parts.size() == 3) {
    RETURN_IF_ERROR(IdsFromFlag("grad", parts[1], out->mutable_logit_diff()->mutable_answer_ids()));
    RETURN_IF_ERROR(IdsFromFlag("grad", parts[2], out->mutable_logit_diff()->mutable_wrong_ids()));
  } else if (parts[0] == "logprob" && parts.size() == 2) {
    RETURN_IF_ERROR(IdsFromFlag("grad", parts[1], out->mutable_logprob()->mutable_ids()));
  } else if (parts[0] == "hook_dot" && parts.size() == 4) {
    out->mutable_hook_dot()->set_hook(std::string(parts[1]));
    RETURN_IF_ERROR(TensorFromSafetensors(std::string(parts[2]), std::string(parts[3]), "--grad",
                                          out->mutable_hook_dot()->mutable_direction()));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--grad ", QuoteUserText(text),
        " is not loss, logit_diff:A:W, logprob:I,J or hook_dot:HOOK:FILE.safetensors:TENSOR (ids "
        "comma-separated, optional @positions)"));
  }
  if (at.size() == 2) RETURN_IF_ERROR(IdsFromFlag("grad", at[1], out->mutable_positions()));
  return absl::OkStatus();
}

absl::Status SamplingFromFlags(const Flags& flags, v1::GenerateRequest* request) {
  ASSIGN_OR_RETURN(int max_new_tokens, flags.GetInt("max-new-tokens"));
  ASSIGN_OR_RETURN(double t, flags.GetDouble("temperature"));
  ASSIGN_OR_RETURN(int top_k, flags.GetInt("top-k"));
  ASSIGN_OR_RETURN(double top_p, flags.GetDouble("top-p"));
  ASSIGN_OR_RETURN(double min_p, flags.GetDouble("min-p"));
  ASSIGN_OR_RETURN(double rep, flags.GetDouble("repetition-penalty"));
  ASSIGN_OR_RETURN(double freq, flags.GetDouble("frequency-penalty"));
  ASSIGN_OR_RETURN(double pres, flags.GetDouble("presence-penalty"));
  ASSIGN_OR_RETURN(int seed, flags.GetInt("seed"));
  ASSIGN_OR_RETURN(std::vector<int> stop_ids, flags.GetIntList("stop-ids"));
  request->set_max_new_tokens(max_new_tokens);
  v1::SamplingParams* s = request->mutable_sampling();
  s->set_temperature(static_cast<float>(t));
  s->set_top_k(top_k);
  s->set_top_p(static_cast<float>(top_p));
  s->set_min_p(static_cast<float>(min_p));
  s->set_repetition_penalty(static_cast<float>(rep));
  s->set_frequency_penalty(static_cast<float>(freq));
  s->set_presence_penalty(static_cast<float>(pres));
  s->set_seed(static_cast<uint64_t>(seed));
  s->mutable_stop_token_ids()->Add(stop_ids.begin(), stop_ids.end());
  s->set_ignore_eos(flags.Get("ignore-eos") == "true");
  return absl::OkStatus();
}

}  // namespace lensd
