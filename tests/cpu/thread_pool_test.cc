// ThreadPool's loops hand chunks to whichever thread is free and end without waiting for a
// worker that has not woken: every unit must still run exactly once, every loop, with more
// threads than cores (some parked at any moment) and loops of every size.
#include "engine/cpu/thread_pool.h"

#include <atomic>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace lensd {
namespace {

TEST(ThreadPool, EveryUnitRunsExactlyOnceUnderOversubscription) {
  ThreadPool pool(4);  // more threads than this machine's cores
  std::mt19937 rng(3);
  std::vector<std::atomic<int>> hits(5000);
  for (int loop = 0; loop < 20000; ++loop) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % hits.size());
    const int64_t grain = 1 + static_cast<int64_t>(rng() % 64);
    for (int64_t i = 0; i < n; ++i) hits[i].store(0);
    pool.ParallelFor(n, grain, [&](int64_t begin, int64_t end) {
      ASSERT_EQ(begin % grain, 0);
      for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "loop " << loop << " unit " << i;
  }
}

}  // namespace
}  // namespace lensd
