#include "engine/core/tensor.h"

#include <gtest/gtest.h>

namespace lensd {
namespace {

TEST(Tensor, ShapeAndRows) {
  Buffer b = Buffer::Host(DType::kF32, {4, 3});
  for (int i = 0; i < 12; ++i) b.As<float>()[i] = static_cast<float>(i);
  TensorView rows = b.view().Rows(1, 3);
  EXPECT_EQ(rows.shape, (Shape{2, 3}));
  EXPECT_EQ(rows.As<float>()[0], 3.0f);
  EXPECT_EQ(b.view().Reshaped({2, 6}).shape.ToString(), "[2, 6]");
  EXPECT_EQ(b.NumBytes(), 48u);
}

TEST(Tensor, BufferMovesOwnership) {
  Buffer a = Buffer::Host(DType::kBF16, {8});
  void* p = a.view().data;
  Buffer b = std::move(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.view().data, p);
}

}  // namespace
}  // namespace lensd
