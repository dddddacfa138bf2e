// Load generator for a running lensd: N concurrent client streams, each issuing requests
// back to back, measured from the client's side of the wire.
//
//   load_gen --addr HOST:PORT --mode generate --streams 8 --requests 4 --prompt-tokens 32
//            --max-new-tokens 64
//   load_gen --addr HOST:PORT --mode cache --streams 1 --requests 3 --prompt-tokens 128
//
// Prints one result line: generate -> tokens/s over the wall time, time to first token
// (mean, p50, p95) and per-stream decode tokens/s; cache -> bytes received per second for
// the full cache (every hook + logits, float32) and per-request latency.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "cli/flags.h"
#include "lensd/v1/lensd.grpc.pb.h"

namespace lensd {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Sample {
  double ttft_s = 0, total_s = 0;
  int64_t tokens = 0, bytes = 0;
};

v1::Prompt MakePrompt(int n, int seed, int vocab) {
  v1::Prompt p;
  for (int i = 0; i < n; ++i) p.mutable_tokens()->add_ids(3 + (seed * 131 + i * 17) % (vocab - 3));
  return p;
}

bool OneGenerate(v1::Lensd::Stub& stub, int prompt_tokens, int max_new, int seed, int vocab,
                 Sample* s) {
  v1::GenerateRequest request;
  *request.mutable_prompt() = MakePrompt(prompt_tokens, seed, vocab);
  request.set_max_new_tokens(max_new);
  request.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  const Clock::time_point t0 = Clock::now();
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateEvent event;
  while (reader->Read(&event)) {
    if (event.has_token()) {
      if (s->tokens++ == 0) s->ttft_s = Seconds(Clock::now() - t0);
    }
  }
  s->total_s = Seconds(Clock::now() - t0);
  grpc::Status st = reader->Finish();
  if (!st.ok()) std::cerr << "Generate: " << st.error_message() << "\n";
  return st.ok();
}

bool OneCache(v1::Lensd::Stub& stub, int prompt_tokens, int seed, int vocab, Sample* s) {
  v1::RunWithCacheRequest request;
  *request.add_prompts() = MakePrompt(prompt_tokens, seed, vocab);
  request.set_dtype(v1::DTYPE_FLOAT32);
  grpc::ClientContext ctx;
  const Clock::time_point t0 = Clock::now();
  auto reader = stub.RunWithCache(&ctx, request);
  v1::CacheMessage message;
  while (reader->Read(&message)) {
    if (message.has_chunk()) {
      if (s->bytes == 0) s->ttft_s = Seconds(Clock::now() - t0);
      s->bytes += static_cast<int64_t>(message.chunk().data().size());
    }
  }
  s->total_s = Seconds(Clock::now() - t0);
  grpc::Status st = reader->Finish();
  if (!st.ok()) std::cerr << "RunWithCache: " << st.error_message() << "\n";
  return st.ok();
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

// One result line for `samples` gathered over `wall` seconds.
void Report(const std::string& label, const std::string& mode, int streams, int prompt_tokens,
            const std::vector<Sample>& samples, double wall) {
  std::vector<double> ttft, per_stream;
  int64_t tokens = 0, bytes = 0;
  for (const Sample& s : samples) {
    ttft.push_back(s.ttft_s * 1e3);
    tokens += s.tokens, bytes += s.bytes;
    if (s.tokens > 1) per_stream.push_back((s.tokens - 1) / (s.total_s - s.ttft_s));
  }
  const double mean_ttft = std::accumulate(ttft.begin(), ttft.end(), 0.0) / ttft.size();
  if (mode == "cache") {
    std::printf("%-22s cache    streams %2d  prompt %4d  %8.1f MB/s  (%.1f MB per request, "
                "first chunk %.0f ms, request %.0f ms mean)\n",
                label.c_str(), streams, prompt_tokens, bytes / wall / 1e6,
                bytes / 1e6 / samples.size(), mean_ttft, wall * streams / samples.size() * 1e3);
    return;
  }
  const double decode = per_stream.empty() ? 0
      : std::accumulate(per_stream.begin(), per_stream.end(), 0.0) / per_stream.size();
  std::printf("%-22s generate streams %2d  prompt %4d  %8.1f tok/s  ttft mean %.0f ms p50 %.0f "
              "p95 %.0f  per-stream decode %.1f tok/s\n",
              label.c_str(), streams, prompt_tokens, tokens / wall, mean_ttft,
              Percentile(ttft, 0.5), Percentile(ttft, 0.95), decode);
}

struct Load {
  std::string mode;
  int streams = 1, requests = 4, prompt_tokens = 32, max_new = 64;
};

// `load.streams` threads, each sending `load.requests` requests one after another; false if
// any request failed.
bool RunStreams(const std::shared_ptr<grpc::Channel>& channel, const Load& load, int vocab,
                std::vector<Sample>* samples) {
  std::mutex mu;
  bool ok = true;
  std::vector<std::thread> threads;
  for (int t = 0; t < load.streams; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::Lensd::NewStub(channel);
      for (int r = 0; r < load.requests; ++r) {
        Sample s;
        const int seed = t * load.requests + r;
        const bool good =
            load.mode == "cache"
                ? OneCache(*stub, load.prompt_tokens, seed, vocab, &s)
                : OneGenerate(*stub, load.prompt_tokens, load.max_new, seed, vocab, &s);
        std::lock_guard<std::mutex> lock(mu);
        ok = ok && good;
        samples->push_back(s);
      }
    });
  }
  for (auto& th : threads) th.join();
  return ok;
}

int Main(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args, {"addr", "mode", "streams", "requests", "prompt-tokens",
                                   "max-new-tokens", "label"});
  if (!flags.ok()) {
    std::cerr << flags.status().message() << "\n";
    return 2;
  }
  Load load;
  load.mode = flags->Get("mode", "generate");
  load.streams = flags->GetInt("streams", 1).value_or(1);
  load.requests = flags->GetInt("requests", 4).value_or(4);
  load.prompt_tokens = flags->GetInt("prompt-tokens", 32).value_or(32);
  load.max_new = flags->GetInt("max-new-tokens", 64).value_or(64);
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(flags->Get("addr", "localhost:50051"),
                                           grpc::InsecureChannelCredentials(), channel_args);
  v1::ModelInfo info;
  grpc::ClientContext ctx;
  grpc::Status st = v1::Lensd::NewStub(channel)->GetModelInfo(&ctx, {}, &info);
  if (!st.ok()) {
    std::cerr << "GetModelInfo: " << st.error_message() << "\n";
    return 1;
  }
  const int vocab = std::min(info.vocab_size(), 259);  // ids valid for every built-in model
  std::vector<Sample> samples;
  const Clock::time_point t0 = Clock::now();
  const bool ok = RunStreams(channel, load, vocab, &samples);
  Report(flags->Get("label", info.model()), load.mode, load.streams, load.prompt_tokens, samples,
         Seconds(Clock::now() - t0));
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace lensd

int main(int argc, char** argv) { return lensd::Main({argv + 1, argv + argc}); }
