#include "engine/core/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lensd {

Shape::Shape(std::initializer_list<int64_t> d) {
  for (int64_t v : d) dims[rank++] = v;
}

Shape Shape::FromVector(const std::vector<int64_t>& d) {
  if (d.size() > kMaxRank) std::abort();  // programmer bug: callers validate rank first
  Shape s;
  for (int64_t v : d) s.dims[s.rank++] = v;
  return s;
}

int64_t Shape::NumElements() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[i];
  return n;
}

std::string Shape::ToString() const {
  return absl::StrCat("[", absl::StrJoin(dims, dims + rank, ", "), "]");
}

bool Shape::operator==(const Shape& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; ++i) {
    if (dims[i] != o.dims[i]) return false;
  }
  return true;
}

TensorView TensorView::Rows(int64_t begin, int64_t end) const {
  TensorView v = *this;
  int64_t row = shape.NumElements() / (shape.rank ? shape.dims[0] : 1);
  v.data = static_cast<char*>(data) + begin * row * DTypeSize(dtype);
  v.shape.dims[0] = end - begin;
  return v;
}

TensorView TensorView::Reshaped(Shape s) const {
  if (s.NumElements() != NumElements()) std::abort();
  TensorView v = *this;
  v.shape = s;
  return v;
}

namespace {

// Large buffers (weights, activations, KV) are mapped directly so that freeing one returns
// its memory to the OS at once; malloc would keep freed blocks below its (adaptive, up to
// 32 MiB) mmap threshold on its heap. The mapping's length sits in a 64-byte header, which
// keeps the data 64-byte aligned.
constexpr size_t kMapThreshold = size_t{1} << 20;
constexpr size_t kMapHeader = 64;

void FreeHost(void* p) { ::operator delete(p, std::align_val_t(64)); }

void FreeMapped(void* p) {
  char* base = static_cast<char*>(p) - kMapHeader;
  size_t length;
  std::memcpy(&length, base, sizeof(length));
  ::munmap(base, length);
}

}  // namespace

Buffer Buffer::Host(DType dtype, Shape shape) {
  const size_t bytes = static_cast<size_t>(shape.NumElements()) * DTypeSize(dtype);
  if (bytes >= kMapThreshold) {
    const size_t length = bytes + kMapHeader;
    void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();  // as operator new does
    std::memcpy(base, &length, sizeof(length));      // anonymous pages are already zero
    return Buffer(static_cast<char*>(base) + kMapHeader, dtype, shape, &FreeMapped);
  }
  void* p = ::operator new(bytes ? bytes : 1, std::align_val_t(64));
  std::memset(p, 0, bytes);
  return Buffer(p, dtype, shape, &FreeHost);
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    dtype_ = o.dtype_;
    shape_ = o.shape_;
    deleter_ = std::exchange(o.deleter_, nullptr);
  }
  return *this;
}

void Buffer::Reset() {
  if (data_ != nullptr && deleter_ != nullptr) deleter_(data_);
  data_ = nullptr;
}

}  // namespace lensd
