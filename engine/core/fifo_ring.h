// Placement of variable-sized regions in a fixed byte ring whose regions are released in the
// order they were placed (first in, first out) — the staging buffers of asynchronous copies,
// where each copy finishes after the one before it. Plain data; not thread-safe (the owner
// holds its own lock). Offsets are aligned to `kAlign` so regions can hold any element type.
#ifndef LENSD_ENGINE_CORE_FIFO_RING_H_
#define LENSD_ENGINE_CORE_FIFO_RING_H_

#include <cstddef>
#include <deque>
#include <optional>

namespace lensd {

class FifoRing {
 public:
  static constexpr size_t kAlign = 256;

  explicit FifoRing(size_t capacity) : capacity_(capacity / kAlign * kAlign) {}

  size_t capacity() const { return capacity_; }
  bool empty() const { return live_.empty(); }

  // The offset of a new region of `bytes`, or nullopt while there is no contiguous room
  // (release older regions first). A region larger than the capacity never fits.
  std::optional<size_t> Place(size_t bytes) {
    const size_t size = (bytes + kAlign - 1) / kAlign * kAlign;
    if (size == 0 || size > capacity_) return std::nullopt;
    std::optional<size_t> at;
    if (live_.empty()) {
      at = 0;
    } else {
      const size_t tail = live_.front().offset, head = live_.back().offset + live_.back().size;
      if (live_.back().offset >= tail) {  // live bytes are [tail, head): room after and before
        if (capacity_ - head >= size)
          at = head;
        else if (tail >= size)
          at = 0;
      } else if (tail - head >= size) {  // wrapped: room only in [head, tail)
        at = head;
      }
    }
    if (at) live_.push_back({*at, size});
    return at;
  }

  // Releases the oldest region.
  void ReleaseOldest() { live_.pop_front(); }

 private:
  struct Region {
    size_t offset;
    size_t size;
  };
  size_t capacity_;
  std::deque<Region> live_;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_CORE_FIFO_RING_H_
