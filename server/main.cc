// lensd: `serve`, `run` and `generate` (DESIGN.md, command-line contract).
// spdlog is configured here and only here; logs go to stderr so stdout stays machine-readable.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/offline_commands.h"
#include "server/serve_command.h"

namespace {

constexpr char kUsage[] =
    "usage: lensd <command> [flags]\n"
    "  serve     [--model DIR] [--host 0.0.0.0] [--port 50051] [--devices cpu|cuda:0,...]\n"
    "            [--dtype float32|bfloat16|float16] [--gpu-memory-fraction 0.9]\n"
    "            [--activation-mib 2048] [--gradient-mib M] [--cuda-graphs false]\n"
    "            [--kv-tokens N]\n"
    "            [--processing none|transformer-lens] [--max-batch-tokens N]\n"
    "            [--max-running N] [--max-queue N] [--max-prompt-tokens N]\n"
    "            [--max-prompt-bytes N] [--max-new-tokens-limit N] [--max-capture-mib N]\n"
    "            [--stall-timeout-s S] [--drain-timeout-s S] [--metrics-port P]\n"
    "            [--metrics-host H] [--auth-token T] [--tls-cert F --tls-key F]\n"
    "            [--max-interventions N] [--max-intervention-mib M]\n"
    "            [--prefix-caching true|false] [--max-sweep-cells N]\n"
    "  run       --out FILE.safetensors (--prompt TEXT | --token-ids 1,2,3)... [--model DIR]\n"
    "            [--hooks PATTERN,...] [--interventions FILE.json] [--verbose]\n"
    "            [--processing none|transformer-lens] [--devices cpu:0,...]\n"
    "            [--dtype float32|bfloat16|float16]   (several prompts: p0.<name>, p1.<name>...)\n"
    "  generate  (--prompt TEXT | --token-ids 1,2,3) [--model DIR] [--max-new-tokens N]\n"
    "            [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
    "            [--interventions FILE.json] ...\n"
    "`lensd COMMAND --help` lists every flag of a command with its meaning and default.\n"
    "Without --model the built-in model (deterministic random weights) is used;\n"
    "--model builtin:gpt2-small gives a GPT-2-small-shaped one.\n";

// libprotobuf logs an ERROR line for every request with invalid UTF-8 in a string field, before
// any authentication: a client could fill the disk. Its lines go through spdlog, at most
// kProtobufLinesPerMinute a minute, with a count of what was dropped.
constexpr int kProtobufLinesPerMinute = 5;

void ProtobufLog(google::protobuf::LogLevel level, const char* file, int line,
                 const std::string& message) {
  static std::mutex mu;
  static auto window = std::chrono::steady_clock::time_point{};
  static int logged = 0, dropped = 0;
  std::lock_guard<std::mutex> lock(mu);
  const auto now = std::chrono::steady_clock::now();
  if (now - window > std::chrono::minutes(1)) {
    if (dropped > 0) spdlog::warn("libprotobuf: {} more messages dropped", dropped);
    window = now, logged = 0, dropped = 0;
  }
  if (++logged > kProtobufLinesPerMinute) {
    ++dropped;
    return;
  }
  const auto spd = level >= google::protobuf::LOGLEVEL_ERROR ? spdlog::level::err
                                                              : spdlog::level::warn;
  spdlog::log(spd, "libprotobuf {}:{}: {}{}", file, line, message,
              logged == kProtobufLinesPerMinute ? " (further messages this minute dropped)" : "");
}

void ConfigureLogging() {
  google::protobuf::SetLogHandler(&ProtobufLog);
  auto logger = spdlog::stderr_color_mt("lensd");
  spdlog::set_default_logger(logger);
  const char* level = std::getenv("LENSD_LOG_LEVEL");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
}

}  // namespace

int main(int argc, char** argv) {
  ConfigureLogging();
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (lensd::WantsHelp(args)) {  // generated from the tables that parse the flags
    if (command == "serve") {
      std::cout << lensd::HelpText("usage: lensd serve [flags]\nLoads the model once and serves "
                                   "lensd.v1 over gRPC until SIGTERM (then drains).",
                                   lensd::ServeFlags());
      return 0;
    }
    if (command == "run") {
      std::cout << lensd::HelpText("usage: lensd run --out FILE.safetensors (--prompt TEXT | "
                                   "--token-ids 1,2,3)... [flags]\nOffline run_with_cache: every "
                                   "selected hook, the logits and the input ids.",
                                   lensd::RunFlags());
      return 0;
    }
    if (command == "generate") {
      std::cout << lensd::HelpText("usage: lensd generate (--prompt TEXT | --token-ids 1,2,3) "
                                   "[flags]\nPrints the generated ids on one line, then their text.",
                                   lensd::GenerateFlags());
      return 0;
    }
  }
  absl::Status status;
  if (command == "serve") {
    status = lensd::ServeCommand(args);
  } else if (command == "run") {
    status = lensd::RunCommand(args, std::cout);
  } else if (command == "generate") {
    status = lensd::GenerateCommand(args, std::cout);
  } else {
    std::cerr << "unknown command '" << command << "'\n" << kUsage;
    return 2;
  }
  if (!status.ok()) {
    std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
              << "\n";
    return 1;
  }
  return 0;
}
