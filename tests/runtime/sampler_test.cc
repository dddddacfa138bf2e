#include "engine/runtime/sampler.h"

#include <gtest/gtest.h>

#include <map>

namespace lensd {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.9f, -1.0f, 0.5f};

TEST(Sampler, GreedyAndDegenerateTruncationsPickArgmax) {
  SamplingParams p;
  EXPECT_EQ(Sampler(p).Sample(kLogits.data(), 5, {}, {}), 1);
  p.temperature = 1.0f;
  p.top_k = 1;
  EXPECT_EQ(Sampler(p).Sample(kLogits.data(), 5, {}, {}), 1);
  p.top_k = 0;
  p.top_p = 1e-6f;
  EXPECT_EQ(Sampler(p).Sample(kLogits.data(), 5, {}, {}), 1);
  p.top_p = 1.0f;
  p.min_p = 0.99f;
  EXPECT_EQ(Sampler(p).Sample(kLogits.data(), 5, {}, {}), 1);
}

TEST(Sampler, SeededSamplingIsReproducibleAndFollowsTopK) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  p.seed = 99;
  Sampler a(p), b(p);
  std::map<int, int> counts;
  for (int i = 0; i < 2000; ++i) {
    int x = a.Sample(kLogits.data(), 5, {}, {});
    EXPECT_EQ(x, b.Sample(kLogits.data(), 5, {}, {}));
    ++counts[x];
  }
  EXPECT_EQ(counts.size(), 2u);  // only tokens 1 and 2
  // p(1) = 1 / (1 + e^-0.1) = 0.525
  EXPECT_NEAR(counts[1] / 2000.0, 0.525, 0.04);
}

TEST(Sampler, Penalties) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;  // 3.0 -> 1.5 for token 1, so token 2 wins
  EXPECT_EQ(Sampler(p).Sample(kLogits.data(), 5, {1}, {}), 2);
  SamplingParams f;
  f.frequency_penalty = 0.2f;
  f.presence_penalty = 0.0f;
  EXPECT_EQ(Sampler(f).Sample(kLogits.data(), 5, {}, {1}), 2);  // 3.0 - 0.2 < 2.9
  f.frequency_penalty = 0.0f;
  f.presence_penalty = 0.2f;
  EXPECT_EQ(Sampler(f).Sample(kLogits.data(), 5, {}, {1}), 2);
}

TEST(Sampler, ValidationNamesTheField) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_NE(ValidateSampling(p).message().find("temperature"), std::string::npos);
  p = {};
  p.top_p = 1.5f;
  EXPECT_NE(ValidateSampling(p).message().find("top_p"), std::string::npos);
  p = {};
  p.min_p = -0.1f;
  EXPECT_FALSE(ValidateSampling(p).ok());
  p = {};
  p.repetition_penalty = 0;
  EXPECT_FALSE(ValidateSampling(p).ok());
  EXPECT_TRUE(ValidateSampling({}).ok());
}

}  // namespace
}  // namespace lensd
