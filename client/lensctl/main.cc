// lensctl: the remote client of lensd (DESIGN.md, command-line contract). Output goes to
// stdout exactly as lensd's offline commands write it; errors print the gRPC status name and
// message and exit 1.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/request_flags.h"
#include "client/lensctl/channel.h"
#include "client/lensctl/commands.h"
#include "engine/core/status.h"
#include "engine/model/json_fields.h"

namespace {

constexpr char kUsage[] =
    "usage: lensctl [--addr HOST:PORT] [--timeout-s S] [--auth-token T] [--tls-ca FILE] <command>\n"
    "  generate  (--prompt TEXT | --token-ids 1,2,3) [--max-new-tokens N] [--temperature T]\n"
    "            [--top-k K] [--top-p P] [--min-p P] [--seed S] [--interventions FILE.json] ...\n"
    "                                                           (prints like lensd generate)\n"
    "  cache     (--prompt TEXT | --token-ids 1,2,3)... [--hooks PATTERN,...]\n"
    "            [--interventions FILE.json] --out FILE.safetensors  (writes like lensd run;\n"
    "            several prompts: tensors named p0.<name>, p1.<name>, ...)\n"
    "  info      [--hooks]      model, devices, KV and limits (--hooks lists every hook)\n"
    "  tokenize  --prompt TEXT  prints the token ids\n"
    "  health    [--service NAME] [--wait S]  prints SERVING or NOT_SERVING (exit 1 unless\n"
    "            SERVING; --wait: poll up to S seconds for SERVING)\n"
    "  sweep     (--clean TEXT | --clean-ids ...) (--corrupted TEXT | --corrupted-ids ...)\n"
    "            [--component resid_pre|resid_mid|resid_post|attn_out|mlp_out|z|q|k|v|pattern]\n"
    "            [--layers START:STOP] [--positions each|all] [--heads each|all]\n"
    "            [--direction denoising|noising] [--metric logit_diff:A:W|logprob:IDS|kl]\n"
    "            --out grid.csv     a patching sweep (PatchSweep), one CSV row per cell\n"
    "`lensctl COMMAND --help` lists every flag of a command with its meaning and default.\n"
    "--addr defaults to localhost:50051; dns:///NAME:PORT or HOST:PORT,HOST:PORT,... balance\n"
    "requests over every server (round robin). LENSD_AUTH_TOKEN is used when --auth-token is absent.\n";

const lensd::FlagTable& GlobalFlags() {
  static const auto* table = new lensd::FlagTable{
      {"addr", "localhost:50051", "the server: HOST:PORT, dns:///NAME:PORT or HOST:PORT,HOST:PORT "
                                  "(round robin over several)"},
      {"timeout-s", "", "deadline of each call in seconds (default: none)"},
      {"auth-token", "", "bearer token (default: LENSD_AUTH_TOKEN, else none)"},
      {"tls-ca", "", "connect with TLS, trusting this PEM CA file"},
  };
  return *table;
}

struct Command {
  const char* name;
  const char* usage;
  lensd::FlagTable flags;  // besides the global ones
};

// The server's SAEs attached by name (lensd serve --sae NAME=DIR).
lensd::FlagTable SaeFlags() {
  return {{"sae", "", "attach the server's SAE NAME (repeatable)"},
          {"splice", "",
           "the attached SAEs' reconstructions replace their hooks' values "
           "(default: the error term is kept)",
           true}};
}

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"generate",
       "usage: lensctl generate (--prompt TEXT | --token-ids 1,2,3) [flags]\n"
       "Generates remotely; prints exactly what `lensd generate` prints.",
       lensd::Concat(
           {lensd::SamplingFlags(), lensd::PromptFlags(), lensd::InterventionFlags(), SaeFlags()})},
      {"cache",
       "usage: lensctl cache (--prompt TEXT | --token-ids 1,2,3)... --out FILE [flags]\n"
       "RunWithCache remotely; writes exactly the file `lensd run` writes.",
       lensd::Concat({lensd::CacheFlags(), SaeFlags()})},
      {"info",
       "usage: lensctl info [--hooks]\nModel, devices, KV blocks and limits.",
       {{"hooks", "", "also list every hook with its shape", true}}},
      {"tokenize",
       "usage: lensctl tokenize --prompt TEXT\nPrints the token ids.",
       {{"prompt", "", "the text (required)"}}},
      {"health",
       "usage: lensctl health [--service NAME] [--wait S]\n"
       "Prints SERVING or NOT_SERVING; exit 1 unless SERVING.",
       {{"service", "", "the grpc.health.v1 service name (default: the server as a whole)"},
        {"wait", "0", "seconds to wait for SERVING (a server still loading or starting)"}}},
      {"sweep",
       "usage: lensctl sweep (--clean TEXT | --clean-ids ...) (--corrupted TEXT | "
       "--corrupted-ids ...) --out grid.csv [flags]\nA patching sweep (PatchSweep), one "
       "CSV row per cell.",
       {{"clean", "", "the clean prompt's text"},
        {"clean-ids", "", "the clean prompt as token ids"},
        {"corrupted", "", "the corrupted prompt's text (as many tokens as the clean one)"},
        {"corrupted-ids", "", "the corrupted prompt as token ids"},
        {"component", "resid_pre",
         "resid_pre, resid_mid, resid_post, attn_out, mlp_out, z, q, "
         "k, v or pattern"},
        {"layers", "", "START:STOP (default: every layer)"},
        {"positions", "each", "each (one cell per position) or all (patched at once)"},
        {"heads", "each", "per-head components: each or all"},
        {"direction", "denoising", "denoising (clean into corrupted) or noising"},
        {"metric", "kl", "logit_diff:A:W, logprob:IDS, kl or logits"},
        {"method", "exact",
         "exact (each cell a patched run) or attribution (each cell "
         "Σ (source − target) · gradient, from one backward pass)"},
        {"out", "", "the CSV file to write (required)"}}},
  };
  return *commands;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

// Takes no value: --help, or a boolean flag of some command (the tables say which).
bool IsBooleanFlag(const std::string& arg) {
  if (arg == "--help") return true;
  for (const Command& c : Commands()) {
    for (const lensd::FlagSpec& f : c.flags) {
      if (f.boolean && arg == "--" + f.name) return true;
    }
  }
  return false;
}

// Splits argv into the command and every flag (global flags may precede or follow it).
bool SplitCommand(const std::vector<std::string>& argv, std::string* command,
                  std::vector<std::string>* flags) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-h") {
      flags->push_back("--help");
      continue;
    }
    if (command->empty() && a.rfind("--", 0) != 0) {
      *command = a;
      continue;
    }
    flags->push_back(a);
    if (command->empty() && a.find('=') == std::string::npos && !IsBooleanFlag(a) &&
        i + 1 < argv.size()) {
      flags->push_back(argv[++i]);
    }
  }
  return !command->empty();
}

// The channel and per-call settings from the global flags.
absl::StatusOr<lensd::Connection> Connect(const lensd::Flags& flags, bool health_checked) {
  lensd::Connection c;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (flags.Has("tls-ca")) {
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(ssl.pem_root_certs, lensd::ReadFileToString(flags.Get("tls-ca")));
    credentials = grpc::SslCredentials(ssl);
  }
  ASSIGN_OR_RETURN(const std::string target, lensd::ChannelTarget(flags.Get("addr")));
  c.channel = lensd::MakeChannel(target, credentials, health_checked);
  const char* env_token = std::getenv("LENSD_AUTH_TOKEN");
  c.auth_token = flags.Get("auth-token", env_token ? env_token : "");
  ASSIGN_OR_RETURN(c.timeout_s, flags.GetInt("timeout-s", 0));
  return c;
}

absl::Status RunCommand(const std::string& command, const std::vector<std::string>& args) {
  const Command* spec = FindCommand(command);
  if (spec == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown command '", command, "'"));
  }
  const lensd::FlagTable table = lensd::Concat({GlobalFlags(), spec->flags});
  if (lensd::WantsHelp(args)) {  // generated from the table that parses the flags
    std::cout << lensd::HelpText(spec->usage, table);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(lensd::Flags flags, lensd::Flags::Parse(args, table));
  ASSIGN_OR_RETURN(lensd::Connection c, Connect(flags, /*health_checked=*/command != "health"));
  if (command == "generate") return lensd::GenerateRemote(c, flags, std::cout);
  if (command == "cache") return lensd::CacheRemote(c, flags, std::cout);
  if (command == "info") return lensd::InfoRemote(c, flags, std::cout);
  if (command == "tokenize") return lensd::TokenizeRemote(c, flags, std::cout);
  if (command == "sweep") return lensd::SweepRemote(c, flags, std::cout);
  return lensd::HealthRemote(c, flags, std::cout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string command;
  std::vector<std::string> flags;
  const bool parsed = SplitCommand({argv + 1, argv + argc}, &command, &flags);
  if (!parsed || command == "help") {  // `lensctl`, `lensctl -h`, `lensctl --help`, `lensctl help`
    std::cout << kUsage;
    return command == "help" || lensd::WantsHelp(flags) ? 0 : 2;
  }
  const absl::Status status = RunCommand(command, flags);
  if (!status.ok()) {
    std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
              << "\n";
    return 1;
  }
  return 0;
}
