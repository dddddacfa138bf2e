#include "engine/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace lensd {
namespace {

TEST(DType, Bf16RoundTripsAndRoundsToNearestEven) {
  EXPECT_EQ(BF16ToF32(F32ToBF16(1.0f)), 1.0f);
  EXPECT_EQ(BF16ToF32(F32ToBF16(-2.5f)), -2.5f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to even (1.0).
  EXPECT_EQ(BF16ToF32(F32ToBF16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(NAN))));
}

TEST(DType, F16KnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);  // overflow -> inf
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-1000, 1000);
  for (int i = 0; i < 1000; ++i) {
    float x = d(rng);
    EXPECT_NEAR(F16ToF32(F32ToF16(x)), x, std::fabs(x) * 1e-3f);
  }
}

TEST(DType, ParsesNames) {
  EXPECT_EQ(*ParseDTypeName("BF16"), DType::kBF16);
  EXPECT_FALSE(ParseDTypeName("F64").ok());
  EXPECT_EQ(*ParseFloatDType("bfloat16"), DType::kBF16);
  EXPECT_FALSE(ParseFloatDType("int8").ok());
}

}  // namespace
}  // namespace lensd
