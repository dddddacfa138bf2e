#include "server/wire.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace lensd {

std::pair<int64_t, int64_t> PositionSlice::Resolve(int64_t n) const {
  auto clamp = [n](int64_t i) { return std::clamp(i < 0 ? i + n : i, int64_t{0}, n); };
  const int64_t b = start ? clamp(*start) : 0;
  const int64_t e = stop ? clamp(*stop) : n;
  return {b, std::max(b, e)};
}

Shape WireShape(const ModelConfig& c, HookId id, int64_t p, const PositionSlice& slice,
                const AttachmentList& attached) {
  const auto [b, e] = slice.Resolve(p);
  if (id.attached()) return Shape{1, e - b, AttachedWidth(attached, id)};
  Shape s = HookShape(c, id.point, p);
  s.dims[PositionAxis(id.point)] = e - b;
  return s;
}

std::pair<Buffer, Buffer> TopFeatures(TensorView src, std::pair<int64_t, int64_t> range, int k,
                                      DType dtype) {
  const int64_t n = src.shape[2], m = range.second - range.first;
  Buffer indices = Buffer::Host(DType::kI32, {1, m, k});
  std::vector<float> values(static_cast<size_t>(m * k));
  std::vector<int32_t> order(static_cast<size_t>(n));
  for (int64_t r = 0; r < m; ++r) {
    const float* row = src.As<float>() + (range.first + r) * n;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [row](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    for (int j = 0; j < k; ++j) {
      indices.As<int32_t>()[r * k + j] = order[j];
      values[static_cast<size_t>(r * k + j)] = row[order[j]];
    }
  }
  Buffer converted = Buffer::Host(dtype, {1, m, k});
  ConvertFromF32(values.data(), dtype, converted.As<char>(), values.size());
  return {std::move(indices), std::move(converted)};
}

Buffer SliceAndConvert(TensorView src, int axis, std::pair<int64_t, int64_t> range, DType dtype) {
  Shape out_shape = src.shape;
  out_shape.dims[axis] = range.second - range.first;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= src.shape[i];
  for (int i = axis + 1; i < src.shape.rank; ++i) inner *= src.shape[i];
  Buffer out = Buffer::Host(dtype, out_shape);
  const size_t run = static_cast<size_t>((range.second - range.first) * inner);
  const size_t elem = DTypeSize(dtype);
  for (int64_t o = 0; o < outer; ++o) {
    const float* from = src.As<float>() + (o * src.shape[axis] + range.first) * inner;
    ConvertFromF32(from, dtype, out.As<char>() + o * run * elem, run);
  }
  return out;
}

}  // namespace lensd
