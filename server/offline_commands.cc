#include "server/offline_commands.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status.h"
#include "engine/model/safetensors.h"

namespace lensd {

const std::set<std::string>& ModelFlagNames() {
  static const auto* names = new std::set<std::string>{
      "model", "devices", "split", "dtype", "processing", "threads", "kv-tokens",
      "tensor-parallel", "device-memory-mib", "offload-layers", "gpu-memory-fraction",
      "cuda-graphs", "activation-mib"};
  return *names;
}

const std::set<std::string>& SamplingFlagNames() {
  static const auto* names = new std::set<std::string>{
      "max-new-tokens", "temperature", "top-k", "top-p", "min-p", "seed", "repetition-penalty",
      "frequency-penalty", "presence-penalty", "stop-ids", "ignore-eos"};
  return *names;
}

std::set<std::string> FlagUnion(std::initializer_list<std::set<std::string>> sets) {
  std::set<std::string> out;
  for (const auto& s : sets) out.insert(s.begin(), s.end());
  return out;
}

absl::StatusOr<LoadOptions> LoadOptionsFromFlags(const Flags& flags) {
  LoadOptions o;
  o.model_dir = flags.Get("model");
  o.devices = flags.Get("devices", "cpu");
  o.split = flags.Get("split");
  ASSIGN_OR_RETURN(o.processing, ParseProcessing(flags.Get("processing", "none")));
  ASSIGN_OR_RETURN(o.threads, flags.GetInt("threads", 0));
  ASSIGN_OR_RETURN(o.kv_tokens, flags.GetInt("kv-tokens", 0));  // 0: from the memory budget
  ASSIGN_OR_RETURN(o.gpu_memory_fraction,
                   flags.GetDouble("gpu-memory-fraction", o.gpu_memory_fraction));
  ASSIGN_OR_RETURN(o.activation_mib, flags.GetInt("activation-mib", o.activation_mib));
  const std::string graphs = flags.Get("cuda-graphs", "false");
  if (graphs != "true" && graphs != "false") {
    return absl::InvalidArgumentError("--cuda-graphs must be true or false");
  }
  o.cuda_graphs = graphs == "true";
  ASSIGN_OR_RETURN(o.dtype, ParseFloatDType(flags.Get("dtype", "float32")));
  ASSIGN_OR_RETURN(o.tensor_parallel, flags.GetInt("tensor-parallel", 1));
  ASSIGN_OR_RETURN(o.offload_layers, flags.GetInt("offload-layers", 0));
  ASSIGN_OR_RETURN(std::vector<int> device_mib, flags.GetIntList("device-memory-mib"));
  for (int mib : device_mib) o.device_memory.push_back(int64_t{mib} << 20);
  return o;
}

absl::StatusOr<SamplingParams> SamplingFromFlags(const Flags& flags) {
  SamplingParams p;
  ASSIGN_OR_RETURN(p.max_new_tokens, flags.GetInt("max-new-tokens", 16));
  ASSIGN_OR_RETURN(double t, flags.GetDouble("temperature", 0.0));
  ASSIGN_OR_RETURN(p.top_k, flags.GetInt("top-k", 0));
  ASSIGN_OR_RETURN(double top_p, flags.GetDouble("top-p", 1.0));
  ASSIGN_OR_RETURN(double min_p, flags.GetDouble("min-p", 0.0));
  ASSIGN_OR_RETURN(double rep, flags.GetDouble("repetition-penalty", 1.0));
  ASSIGN_OR_RETURN(double freq, flags.GetDouble("frequency-penalty", 0.0));
  ASSIGN_OR_RETURN(double pres, flags.GetDouble("presence-penalty", 0.0));
  ASSIGN_OR_RETURN(int seed, flags.GetInt("seed", 0));
  ASSIGN_OR_RETURN(p.stop_ids, flags.GetIntList("stop-ids"));
  p.temperature = static_cast<float>(t), p.top_p = static_cast<float>(top_p);
  p.min_p = static_cast<float>(min_p), p.repetition_penalty = static_cast<float>(rep);
  p.frequency_penalty = static_cast<float>(freq), p.presence_penalty = static_cast<float>(pres);
  p.seed = static_cast<uint64_t>(seed);
  p.ignore_eos = flags.Get("ignore-eos") == "true";
  RETURN_IF_ERROR(ValidateSampling(p));
  return p;
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const Flags& flags, const Tokenizer* tokenizer) {
  if (flags.Has("prompt") == flags.Has("token-ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt or --token-ids");
  }
  std::vector<int> ids;
  if (flags.Has("token-ids")) {
    ASSIGN_OR_RETURN(ids, flags.GetIntList("token-ids"));
  } else {
    if (tokenizer == nullptr) {
      return absl::FailedPreconditionError("the model has no tokenizer; use --token-ids");
    }
    ASSIGN_OR_RETURN(ids, tokenizer->Encode(flags.Get("prompt")));
  }
  if (ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string FormatGeneration(const std::vector<int32_t>& ids, const Tokenizer* tokenizer) {
  return FormatGeneration(
      ids, tokenizer ? tokenizer->Decode(std::vector<int>(ids.begin(), ids.end())) : "");
}

std::string FormatGeneration(const std::vector<int32_t>& ids, const std::string& text) {
  return absl::StrCat(absl::StrJoin(ids, " "), "\n", text, "\n");
}

absl::Status WriteCacheFile(const std::string& path, const std::vector<int32_t>& ids,
                            const CacheResult& result) {
  SafetensorsWriter w;
  for (const auto& [name, buffer] : result.cache) w.AddF32(name, buffer.view());
  w.AddF32("logits", result.logits.view());
  w.Add("input_ids", DType::kI32, {1, static_cast<int64_t>(ids.size())}, ids.data(),
        ids.size() * sizeof(int32_t));
  return w.WriteFile(path);
}

absl::Status RunCommand(const std::vector<std::string>& args, std::ostream& out) {
  ASSIGN_OR_RETURN(Flags flags, Flags::Parse(args, FlagUnion({ModelFlagNames(), {"prompt", "token-ids", "hooks", "out"}})));
  if (!flags.Has("out")) return absl::InvalidArgumentError("--out FILE.safetensors is required");
  ASSIGN_OR_RETURN(LoadOptions options, LoadOptionsFromFlags(flags));
  ASSIGN_OR_RETURN(auto model, Model::Load(options));
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, PromptIds(flags, model->tokenizer()));
  HookSelection selection = HookSelection::All(model->config());
  if (flags.Has("hooks")) {
    ASSIGN_OR_RETURN(selection, HookSelection::Parse(model->config(), flags.GetList("hooks")));
  }
  ASSIGN_OR_RETURN(CacheResult result, RunWithCache(*model, ids, selection));
  RETURN_IF_ERROR(WriteCacheFile(flags.Get("out"), ids, result));
  out << "wrote " << result.cache.size() << " hooks + logits for " << ids.size() << " tokens to "
      << flags.Get("out") << "\n";
  return absl::OkStatus();
}

absl::Status GenerateCommand(const std::vector<std::string>& args, std::ostream& out) {
  ASSIGN_OR_RETURN(Flags flags, Flags::Parse(args, FlagUnion({ModelFlagNames(), SamplingFlagNames(), {"prompt", "token-ids"}}),
                                             {"ignore-eos"}));
  ASSIGN_OR_RETURN(LoadOptions options, LoadOptionsFromFlags(flags));
  ASSIGN_OR_RETURN(SamplingParams params, SamplingFromFlags(flags));
  ASSIGN_OR_RETURN(auto model, Model::Load(options));
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, PromptIds(flags, model->tokenizer()));
  ASSIGN_OR_RETURN(GenerateResult result, Generate(*model, ids, params));
  out << FormatGeneration(result.tokens, model->tokenizer());
  return absl::OkStatus();
}

}  // namespace lensd
