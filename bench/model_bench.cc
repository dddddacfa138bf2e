// Engine throughput on any device map, straight through Model::Forward (no server); takes
// every model flag of `lensd run` (--devices, --dtype, --kv-tokens, --cuda-graphs, ...):
//   model_bench --model builtin:llama-1b --devices cuda:0 --dtype bfloat16 --batches 1,8,64
//               --prefill 8x1024 [--mem-gbs 4300] [--peak-tflops 60|measure] [--cuda-graphs true]
//   model_bench --model builtin:gpt2-small --devices cuda:0 --capture 8x256
// Prints one line per measurement: decode tokens/s at each batch size with the weight-read
// roofline (weights bytes / memory bandwidth per step) and its fraction; prefill tokens/s
// with achieved TFLOP/s (2·params per token) against the GEMM peak — given, or measured
// (`measure`) as the first device's Linear on 8192×8192 weights in the model dtype;
// capture bytes/s of the full cache to host.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "cli/flags.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "server/offline_commands.h"

namespace lensd {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<int32_t> Ids(int n, int seed, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = 3 + (seed * 7919 + i * 131) % (vocab - 3);
  return ids;
}

// A /proc/self/status field ("VmRSS:", "VmHWM:") in GB; 0 where unavailable.
double ProcStatusGb(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  double kb = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, std::strlen(field)) == 0)
      kb = std::atof(line + std::strlen(field));
  }
  std::fclose(f);
  return kb * 1024 / 1e9;
}

void Decode(Model& m, int batch, double mem_gbs, size_t weight_bytes) {
  const int V = m.config().vocab_size, context = 128, steps = 32;
  std::vector<std::vector<int32_t>> tables(batch);
  std::vector<SeqInput> in(batch);
  for (int b = 0; b < batch; ++b) {
    if (!m.blocks().Reserve(tables[b], context + steps + 1)) {
      std::printf("decode   batch %3d  KV cache too small (raise --kv-tokens)\n", batch);
      for (auto& t : tables) m.blocks().Release(t);
      return;
    }
    in[b] = {Ids(context, b, V), 0, &tables[b], false};
  }
  (void)m.Forward(in, nullptr);  // prefill the context
  for (auto& s : in) s.start_pos = context, s.tokens = {42};
  (void)m.Forward(in, nullptr);  // warm-up step
  for (auto& s : in) s.start_pos += 1;
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < steps; ++i) {
    (void)m.Forward(in, nullptr);
    for (auto& s : in) s.start_pos += 1;
  }
  const double secs = Since(t0), tps = batch * steps / secs;
  const double roofline = batch / (weight_bytes / (mem_gbs * 1e9));
  std::printf("decode   batch %3d  %10.1f tok/s  roofline %10.1f tok/s  %5.1f%%\n", batch, tps,
              roofline, 100 * tps / roofline);
  for (auto& t : tables) m.blocks().Release(t);
}

// `prompts` prompts of `tokens` tokens in one step.
void Prefill(Model& m, int prompts, int tokens, double peak_tflops, size_t params) {
  std::vector<std::vector<int32_t>> tables(prompts);
  std::vector<SeqInput> in(prompts);
  bool reserved = true;
  for (int p = 0; p < prompts; ++p) {
    reserved = reserved && m.blocks().Reserve(tables[p], tokens);
    in[p] = {Ids(tokens, p + 1, m.config().vocab_size), 0, &tables[p], false};
  }
  auto release = [&] { for (auto& t : tables) m.blocks().Release(t); };
  if (!reserved) {
    std::printf("prefill  KV cache too small (raise --kv-tokens)\n");
    return release();
  }
  if (auto warm = m.Forward(in, nullptr); !warm.ok()) {
    std::printf("prefill  %s\n", warm.status().ToString().c_str());
    return release();
  }
  const int reps = 3;
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < reps; ++i) (void)m.Forward(in, nullptr);
  const double tps = double{reps} * prompts * tokens / Since(t0), tflops = 2.0 * params * tps / 1e12;
  std::printf("prefill  %dx%d tok  %10.1f tok/s  %8.2f TFLOP/s  %5.1f%% of %.2f\n", prompts, tokens,
              tps, tflops, 100 * tflops / peak_tflops, peak_tflops);
  release();
}

// "N" or "PxN" (prompts x tokens); false when malformed.
bool ParseShape(const std::string& s, int* prompts, int* tokens) {
  std::vector<std::string> parts = absl::StrSplit(s, 'x');
  if (parts.size() == 1) parts.insert(parts.begin(), "1");
  return parts.size() == 2 && absl::SimpleAtoi(parts[0], prompts) &&
         absl::SimpleAtoi(parts[1], tokens) && *prompts > 0 && *tokens > 0;
}

void Capture(Model& m, int batch, int tokens) {
  const ModelConfig& c = m.config();
  std::vector<std::vector<int32_t>> tables(batch);
  std::vector<SeqInput> in(batch);
  for (int b = 0; b < batch; ++b) {
    if (!m.blocks().Reserve(tables[b], tokens)) {
      std::printf("capture  KV cache too small (raise --kv-tokens)\n");
      for (auto& t : tables) m.blocks().Release(t);
      return;
    }
    in[b] = {Ids(tokens, b, c.vocab_size), 0, &tables[b], true};
  }
  CacheCollector sink(HookSelection::All(c), batch);
  (void)m.Forward(in, &sink);  // warm-up
  CacheCollector timed(HookSelection::All(c), batch);
  const Clock::time_point t0 = Clock::now();
  auto r = m.Forward(in, &timed);
  const double secs = Since(t0);
  size_t bytes = r.ok() ? r->logits.NumBytes() : 0;
  for (int b = 0; b < batch; ++b) {
    for (const auto& [name, buf] : timed.cache(b)) bytes += buf.NumBytes();
  }
  std::printf("capture  %dx%d  %.2f GB in %.3f s  %8.2f GB/s to host\n", batch, tokens, bytes / 1e9,
              secs, bytes / 1e9 / secs);
  for (auto& t : tables) m.blocks().Release(t);
}

// TFLOP/s of the first device's Linear: 2048 rows × 8192×8192 weights of `dtype`.
double GemmPeak(const std::string& devices, DType dtype) {
  auto backend = MakeBackendFor(devices.substr(0, devices.find(',')));
  if (!backend.ok()) return 0;
  Backend& b = **backend;
  const int64_t T = 2048, N = 8192, K = 8192;
  auto w = b.Allocate(dtype, {N, K}), x = b.Allocate(DType::kF32, {T, K});
  auto y = b.Allocate(DType::kF32, {T, N});
  if (!w.ok() || !x.ok() || !y.ok()) return 0;
  b.Linear(x->view(), w->view(), {}, y->view());  // plan + warm-up
  b.Synchronize();
  const int reps = 10;
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < reps; ++i) b.Linear(x->view(), w->view(), {}, y->view());
  b.Synchronize();
  const double tflops = 2.0 * T * N * K * reps / Since(t0) / 1e12;
  std::printf("gemm     %ldx%ldx%ld %s  %8.2f TFLOP/s\n", T, N, K,
              std::string(DTypeName(dtype)).c_str(), tflops);
  return tflops;
}

int Main(const std::vector<std::string>& args) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("model_bench"));  // results on stdout
  auto flags = Flags::Parse(
      args, Concat({ModelFlags(),
                    {{"batches", "", "decode batch sizes, e.g. 1,8,64"},
                     {"prefill", "", "prefill PROMPTSxTOKENS, e.g. 8x1024"},
                     {"mem-gbs", "4300", "memory bandwidth of the roofline, GB/s"},
                     {"peak-tflops", "60", "GEMM peak for prefill, or 'measure'"},
                     {"capture", "", "full-cache capture BATCHxTOKENS, e.g. 8x256"}}}));
  absl::StatusOr<LoadOptions> options =
      flags.ok() ? LoadOptionsFromFlags(*flags) : absl::StatusOr<LoadOptions>(flags.status());
  if (!options.ok()) {
    std::cerr << options.status() << "\n";
    return 2;
  }
  const LoadOptions& o = *options;
  const Clock::time_point load_start = Clock::now();
  auto model = Model::Load(o);
  const double load_secs = Since(load_start);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  Model& m = **model;
  size_t weight_bytes = 0;
  for (const DeviceLayout& d : m.Devices()) weight_bytes += d.weight_bytes;
  const size_t params = weight_bytes / DTypeSize(o.dtype);  // vectors are negligible
  std::printf("%s on %s: %.2f GB of %s weights\n", flags->Get("model", "builtin:tiny").c_str(),
              o.devices.c_str(),
              weight_bytes / 1e9, std::string(DTypeName(o.dtype)).c_str());
  std::printf("load     %.2f s  resident %.2f GB (peak %.2f GB)\n", load_secs,
              ProcStatusGb("VmRSS:"), ProcStatusGb("VmHWM:"));
  const double mem_gbs = flags->GetDouble("mem-gbs", 4300).value_or(4300);
  for (int b : flags->GetIntList("batches").value_or(std::vector<int>{})) Decode(m, b, mem_gbs, weight_bytes);
  if (flags->Has("prefill")) {
    const double peak = flags->Get("peak-tflops") == "measure"
                            ? GemmPeak(o.devices, o.dtype)
                            : flags->GetDouble("peak-tflops", 60).value_or(60);
    int prompts, tokens;
    if (!ParseShape(flags->Get("prefill"), &prompts, &tokens)) {
      std::cerr << "--prefill: expected TOKENS or PROMPTSxTOKENS\n";
      return 2;
    }
    Prefill(m, prompts, tokens, peak, params);
  }
  if (flags->Has("capture")) {
    int batch, tokens;
    if (!ParseShape(flags->Get("capture"), &batch, &tokens)) {
      std::cerr << "--capture: expected PROMPTSxTOKENS\n";
      return 2;
    }
    Capture(m, batch, tokens);
  }
  return 0;
}

}  // namespace
}  // namespace lensd

int main(int argc, char** argv) { return lensd::Main({argv + 1, argv + argc}); }
