// Token selection from logits: greedy, temperature, top-k, top-p, min-p, repetition /
// frequency / presence penalties, with a seeded RNG so a request is reproducible.
#ifndef LENSD_ENGINE_RUNTIME_SAMPLER_H_
#define LENSD_ENGINE_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace lensd {

struct SamplingParams {
  float temperature = 0.0f;         // 0 = greedy (argmax, first index on ties)
  int top_k = 0;                    // 0 = off
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; HF semantics over prompt and output
  float frequency_penalty = 0.0f;   // OpenAI semantics over output tokens
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
  int max_new_tokens = 16;
  std::vector<int> stop_ids;        // in addition to the model's EOS ids
  bool ignore_eos = false;
};

// InvalidArgument naming the bad field.
absl::Status ValidateSampling(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // `logits` [vocab]; `prompt` and `output` are the tokens so far (for penalties).
  int Sample(const float* logits, int vocab, const std::vector<int>& prompt,
             const std::vector<int>& output);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_SAMPLER_H_
