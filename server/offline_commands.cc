#include "server/offline_commands.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status.h"
#include "server/interventions_wire.h"
#include "server/request_wire.h"
#include "server/sae_wire.h"

namespace lensd {

const FlagTable& ModelFlags() {
  static const auto* table = new FlagTable{
      {"model", "",
       "Hugging Face directory or hub id (org/name[@rev], offline cache); "
       "builtin:tiny|gpt2-small|llama-1b for random weights (default: builtin:tiny)"},
      {"tokenizer", "",
       "directory of tokenizer files to use instead of the model's (a built-in "
       "model's is bytes), e.g. GPT-2's for builtin:gpt2-small"},
      {"devices", "auto",
       "auto (every CUDA device, else the CPU), cpu, cpu:0,cpu:1,... or "
       "cuda:0,cuda:1,..."},
      {"split", "",
       "layers per device: transformer-lens (block i on floor(i*n/L)), memory, or "
       "explicit ranges 0-9,10-31 (default: transformer-lens)"},
      {"dtype", "float32", "weight matrices and KV cache: float32, bfloat16 or float16"},
      {"kv-dtype", "",
       "KV cache storage when it should differ from --dtype: float32, bfloat16 "
       "or float16 (default: --dtype)"},
      {"processing", "none",
       "none, or transformer-lens (fold_ln, center_writing_weights, "
       "center_unembed, fold_value_biases)"},
      {"threads", "", "CPU compute threads (default: every core; serve: cores - 1)"},
      {"kv-tokens", "",
       "paged KV cache in tokens (default: what the memory budget leaves after "
       "the weights, else 16384)"},
      {"tensor-parallel", "1", "ranks per pipeline stage (consecutive devices)"},
      {"device-memory-mib", "",
       "memory of each virtual device for --split memory, e.g. "
       "8000,24000 (default: host memory shared evenly)"},
      {"offload-layers", "0", "the last K layers stay in host memory, streamed in ahead of use"},
      {"gpu-memory-fraction", "0.9", "share of each GPU's memory lensd may use"},
      {"cuda-graphs", "false", "replay decode steps on one GPU as CUDA graphs (true|false)"},
      {"activation-mib", "2048", "GPU memory kept for one step's activations"},
      {"gradient-mib", "0",
       "memory one gradient request may use beyond its forward pass; more is "
       "RESOURCE_EXHAUSTED (0: a quarter of host memory)"},
      {"sae", "",
       "NAME=DIR[@HOOK]: an SAELens SAE directory (cfg.json + sae_weights."
       "safetensors) to load beside the model, HOOK overriding cfg.json's "
       "(repeatable)"},
  };
  return *table;
}

FlagTable SpliceFlag() {
  return {{"splice", "",
           "every --sae's reconstruction replaces its hook's value (default: the error term is "
           "kept, the model unchanged)",
           true}};
}

FlagTable RunFlags() {
  return Concat({ModelFlags(),
                 CacheFlags(),
                 SpliceFlag(),
                 {{"verbose", "", "print the CPU kernel families in use", true}}});
}

absl::StatusOr<SaeSet> SaesFromFlags(const Flags& flags, const Model& model) {
  std::vector<std::string> args;
  for (const auto& [name, value] : flags.Occurrences({"sae"})) args.push_back(value);
  return LoadSaes(model, args);
}

namespace {

// Every loaded SAE (--splice: spliced) with the interventions file's feature edits.
absl::StatusOr<AttachmentList> AttachAll(const Flags& flags, const SaeSet& saes,
                                         const WireInterventions& wire,
                                         const std::vector<int>& lengths, bool generate,
                                         int max_tokens) {
  google::protobuf::RepeatedPtrField<v1::SaeAttach> requested;
  for (const auto& [name, sae] : saes) {
    v1::SaeAttach* a = requested.Add();
    a->set_name(name);
    a->set_splice(flags.Has("splice"));
  }
  return ToAttachments(requested, wire, &saes, lengths, generate, max_tokens);
}

// The CLIs' own files: no server limits.
InterventionLimits UnlimitedInterventions() {
  InterventionLimits unlimited;
  unlimited.max_interventions = INT32_MAX, unlimited.max_bytes = INT64_MAX;
  return unlimited;
}

}  // namespace

FlagTable GenerateFlags() {
  return Concat({ModelFlags(), SamplingFlags(), PromptFlags(), InterventionFlags(), SpliceFlag()});
}

absl::StatusOr<LoadOptions> LoadOptionsFromFlags(const Flags& flags) {
  LoadOptions o;
  o.model_dir = flags.Get("model");
  o.tokenizer_dir = flags.Get("tokenizer");
  o.devices = flags.Get("devices");
  o.split = flags.Get("split");
  ASSIGN_OR_RETURN(o.processing, ParseProcessing(flags.Get("processing")));
  ASSIGN_OR_RETURN(o.threads, flags.GetInt("threads", 0));
  ASSIGN_OR_RETURN(o.kv_tokens, flags.GetInt("kv-tokens", 0));  // 0: from the memory budget
  ASSIGN_OR_RETURN(o.gpu_memory_fraction,
                   flags.GetDouble("gpu-memory-fraction"));
  ASSIGN_OR_RETURN(o.activation_mib, flags.GetInt("activation-mib"));
  ASSIGN_OR_RETURN(o.gradient_mib, flags.GetInt("gradient-mib"));
  const std::string graphs = flags.Get("cuda-graphs");
  if (graphs != "true" && graphs != "false") {
    return absl::InvalidArgumentError("--cuda-graphs must be true or false");
  }
  o.cuda_graphs = graphs == "true";
  ASSIGN_OR_RETURN(o.dtype, ParseFloatDType(flags.Get("dtype")));
  if (flags.Has("kv-dtype")) {
    ASSIGN_OR_RETURN(DType kv, ParseFloatDType(flags.Get("kv-dtype")));
    o.kv_dtype = kv;
  }
  ASSIGN_OR_RETURN(o.tensor_parallel, flags.GetInt("tensor-parallel"));
  ASSIGN_OR_RETURN(o.offload_layers, flags.GetInt("offload-layers"));
  ASSIGN_OR_RETURN(std::vector<int> device_mib, flags.GetIntList("device-memory-mib"));
  for (int mib : device_mib) o.device_memory.push_back(int64_t{mib} << 20);
  return o;
}

absl::StatusOr<SamplingParams> GenerateSampling(const Flags& flags) {
  v1::GenerateRequest request;
  RETURN_IF_ERROR(SamplingFromFlags(flags, &request));
  ASSIGN_OR_RETURN(SamplingParams p, ToSampling(request.sampling()));
  p.max_new_tokens = request.max_new_tokens();
  RETURN_IF_ERROR(ValidateSampling(p));
  return p;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> PromptIds(const Flags& flags,
                                                            const Tokenizer* tokenizer) {
  ASSIGN_OR_RETURN(std::vector<PromptArg> args, PromptArgs(flags));
  std::vector<std::vector<int32_t>> out;
  for (const PromptArg& arg : args) {
    std::vector<int> ids = arg.ids;
    if (arg.text) {
      if (tokenizer == nullptr) {
        return absl::FailedPreconditionError("the model has no tokenizer; use --token-ids");
      }
      ASSIGN_OR_RETURN(ids, tokenizer->Encode(arg.value));
    }
    if (ids.empty()) return absl::InvalidArgumentError("a prompt has no tokens");
    out.emplace_back(ids.begin(), ids.end());
  }
  return out;
}

absl::StatusOr<WireInterventions> WireInterventionsFromFlags(const Flags& flags) {
  WireInterventions wire;
  if (flags.Has("interventions")) {
    RETURN_IF_ERROR(ReadInterventionsFile(flags.Get("interventions"), &wire));
  }
  return wire;
}

std::string FormatGeneration(const std::vector<int32_t>& ids, const Tokenizer* tokenizer) {
  return FormatGeneration(
      ids, tokenizer ? tokenizer->Decode(std::vector<int>(ids.begin(), ids.end())) : "");
}

absl::Status RunCommand(const std::vector<std::string>& args, std::ostream& out) {
  ASSIGN_OR_RETURN(Flags flags, Flags::Parse(args, RunFlags()));
  if (!flags.Has("out")) return absl::InvalidArgumentError("--out FILE.safetensors is required");
  ASSIGN_OR_RETURN(LoadOptions options, LoadOptionsFromFlags(flags));
  ASSIGN_OR_RETURN(auto model, Model::Load(options));
  if (flags.Has("verbose") && !model->CpuKernels().empty()) {
    out << "cpu kernels: " << model->CpuKernels() << "\n";
  }
  const ModelConfig& c = model->config();
  ASSIGN_OR_RETURN(auto prompts, PromptIds(flags, model->tokenizer()));
  std::vector<int> lengths;
  for (const auto& ids : prompts) lengths.push_back(static_cast<int>(ids.size()));
  ASSIGN_OR_RETURN(const WireInterventions wire, WireInterventionsFromFlags(flags));
  ASSIGN_OR_RETURN(auto interventions,
                   ToInterventionSet(wire, c, lengths, false, 0, UnlimitedInterventions()));
  ASSIGN_OR_RETURN(SaeSet saes, SaesFromFlags(flags, *model));
  ASSIGN_OR_RETURN(AttachmentList attached, AttachAll(flags, saes, wire, lengths, false, 0));
  ASSIGN_OR_RETURN(const std::vector<HookId> sites, AttachmentSites(c, attached));
  HookSelection selection = HookSelection::All(c, sites);
  if (flags.Has("hooks")) {
    ASSIGN_OR_RETURN(selection, HookSelection::Parse(c, flags.GetList("hooks"), sites));
  }
  std::vector<CacheResult> results;
  const std::vector<const AttachmentList*> per_prompt(prompts.size(),
                                                      attached.empty() ? nullptr : &attached);
  if (flags.Has("grad")) {
    v1::Objective wire;
    RETURN_IF_ERROR(ObjectiveFromFlag(flags.Get("grad"), &wire));
    ASSIGN_OR_RETURN(Objective objective, ToObjective(wire, c, lengths));
    ASSIGN_OR_RETURN(results, RunWithGradients(*model, prompts, selection, objective,
                                               interventions.get(), per_prompt));
  } else {
    ASSIGN_OR_RETURN(results,
                     RunWithCache(*model, prompts, selection, interventions.get(), per_prompt));
  }
  RETURN_IF_ERROR(WriteCacheFile(flags.Get("out"), prompts, results));
  out << CacheSummary(flags.Get("out"), prompts, results);
  return absl::OkStatus();
}

absl::Status GenerateCommand(const std::vector<std::string>& args, std::ostream& out) {
  ASSIGN_OR_RETURN(Flags flags, Flags::Parse(args, GenerateFlags()));
  ASSIGN_OR_RETURN(LoadOptions options, LoadOptionsFromFlags(flags));
  ASSIGN_OR_RETURN(SamplingParams params, GenerateSampling(flags));
  ASSIGN_OR_RETURN(auto model, Model::Load(options));
  ASSIGN_OR_RETURN(auto prompts, PromptIds(flags, model->tokenizer()));
  if (prompts.size() != 1) return absl::InvalidArgumentError("generate takes one prompt");
  const int P = static_cast<int>(prompts[0].size());
  const int max_tokens = std::min(P + params.max_new_tokens, model->config().max_positions);
  ASSIGN_OR_RETURN(const WireInterventions wire, WireInterventionsFromFlags(flags));
  ASSIGN_OR_RETURN(auto interventions, ToInterventionSet(wire, model->config(), {P}, true,
                                                         max_tokens, UnlimitedInterventions()));
  ASSIGN_OR_RETURN(SaeSet saes, SaesFromFlags(flags, *model));
  ASSIGN_OR_RETURN(AttachmentList attached, AttachAll(flags, saes, wire, {P}, true, max_tokens));
  RETURN_IF_ERROR(AttachmentSites(model->config(), attached).status());
  ASSIGN_OR_RETURN(GenerateResult result,
                   Generate(*model, prompts[0], params, nullptr, interventions.get(),
                            attached.empty() ? nullptr : &attached));
  out << FormatGeneration(result.tokens, model->tokenizer());
  return absl::OkStatus();
}

}  // namespace lensd
