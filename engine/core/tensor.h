// Shape, TensorView (non-owning, trivially copyable) and Buffer (owning, move-only).
#ifndef LENSD_ENGINE_CORE_TENSOR_H_
#define LENSD_ENGINE_CORE_TENSOR_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "engine/core/dtype.h"

namespace lensd {

inline constexpr int kMaxRank = 6;

struct Shape {
  int rank = 0;
  int64_t dims[kMaxRank] = {};

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  static Shape FromVector(const std::vector<int64_t>& d);  // CHECKs rank <= kMaxRank

  int64_t operator[](int i) const { return dims[i]; }
  int64_t NumElements() const;
  std::vector<int64_t> ToVector() const { return {dims, dims + rank}; }
  std::string ToString() const;  // "[1, 7, 64]"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
};

// A view of memory owned elsewhere. `device` is the index of the backend that owns the memory
// (0 for host memory of the CPU backend); views never outlive their Buffer.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;

  int64_t NumElements() const { return shape.NumElements(); }
  size_t NumBytes() const { return static_cast<size_t>(NumElements()) * DTypeSize(dtype); }
  bool empty() const { return data == nullptr; }
  template <typename T>
  T* As() const {
    return static_cast<T*>(data);
  }
  // Rows [begin, end) of the leading dimension, as a view.
  TensorView Rows(int64_t begin, int64_t end) const;
  // Same memory, another shape with the same element count (CHECKed).
  TensorView Reshaped(Shape s) const;
};

// Memory that frees itself. Host buffers come from aligned new; device backends pass their own
// deleter. Move-only.
class Buffer {
 public:
  using Deleter = void (*)(void*);
  Buffer() = default;
  Buffer(void* data, DType dtype, Shape shape, Deleter deleter)
      : data_(data), dtype_(dtype), shape_(shape), deleter_(deleter) {}
  // Host memory, zero-filled.
  static Buffer Host(DType dtype, Shape shape);
  ~Buffer() { Reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  TensorView view() const { return TensorView{data_, dtype_, shape_}; }
  bool empty() const { return data_ == nullptr; }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  template <typename T>
  T* As() const {
    return static_cast<T*>(data_);
  }
  size_t NumBytes() const { return view().NumBytes(); }

 private:
  void Reset();
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
  Deleter deleter_ = nullptr;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_CORE_TENSOR_H_
