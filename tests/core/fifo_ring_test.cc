#include "engine/core/fifo_ring.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>
#include <vector>

namespace lensd {
namespace {

TEST(FifoRing, PlacesInOrderAndWraps) {
  FifoRing ring(1024);
  EXPECT_EQ(ring.Place(300), 0u);            // [0, 512)
  EXPECT_EQ(ring.Place(256), 512u);          // [512, 768)
  EXPECT_EQ(ring.Place(512), std::nullopt);  // 256 left at the end, nothing before
  ring.ReleaseOldest();                      // frees [0, 512)
  EXPECT_EQ(ring.Place(512), 0u);            // wraps to the front
  // Wrapped: new regions go only between the newest and the oldest, which touch.
  EXPECT_EQ(ring.Place(1), std::nullopt);
  ring.ReleaseOldest();  // frees [512, 768)
  EXPECT_EQ(ring.Place(256), 512u);
}

TEST(FifoRing, RejectsWhatCanNeverFit) {
  FifoRing ring(1000);  // rounded down to 768
  EXPECT_EQ(ring.capacity(), 768u);
  EXPECT_EQ(ring.Place(769), std::nullopt);
  EXPECT_EQ(ring.Place(0), std::nullopt);
  EXPECT_EQ(ring.Place(768), 0u);
}

// Random placements and releases: live regions never overlap, and an empty ring always
// takes anything up to its capacity.
TEST(FifoRing, LiveRegionsNeverOverlap) {
  const size_t cap = 64 * FifoRing::kAlign;
  FifoRing ring(cap);
  std::deque<std::pair<size_t, size_t>> live;  // offset, bytes
  std::mt19937 rng(7);
  int placed = 0;
  for (int i = 0; i < 20000; ++i) {
    if (!live.empty() && rng() % 3 == 0) {
      ring.ReleaseOldest();
      live.pop_front();
      continue;
    }
    const size_t bytes = 1 + rng() % (cap / 3);
    const auto at = ring.Place(bytes);
    if (live.empty()) {
      ASSERT_TRUE(at.has_value());
    }
    if (!at) continue;
    ++placed;
    ASSERT_EQ(*at % FifoRing::kAlign, 0u);
    ASSERT_LE(*at + bytes, cap);
    for (const auto& [off, n] : live) ASSERT_TRUE(*at + bytes <= off || off + n <= *at);
    live.push_back({*at, bytes});
  }
  EXPECT_GT(placed, 5000);
}

}  // namespace
}  // namespace lensd
