#include "engine/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lensd {
namespace {

// How long a worker (or the caller, waiting for them) spins before it sleeps: about the gap
// between two loops of one forward step, so a busy step keeps its team awake and an idle
// server sleeps at once.
constexpr int kSpin = 4000;

inline void Pause() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { Work(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (std::thread& w : workers_) w.join();
}

void ThreadPool::Work(int thread) {
  uint64_t seen = 0;
  while (true) {
    for (int i = 0; i < kSpin && generation_.load() == seen && !stop_.load(); ++i) Pause();
    if (generation_.load() == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      start_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
    }
    if (stop_.load()) return;
    seen = generation_.load();
    if (joined_.fetch_add(1) < 0) continue;  // the caller has closed this loop
    (*job_)(thread);
    finished_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);  // the caller may be between its check and its wait
    done_.notify_one();
  }
}

void ThreadPool::Run(const std::function<void(int)>& fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  job_ = &fn;
  finished_.store(0);
  joined_.store(0);
  {
    std::lock_guard<std::mutex> lock(mu_);  // a worker between its check and its wait sees it
    generation_.fetch_add(1);
  }
  start_.notify_all();
  fn(0);
  // Close the loop: the workers that joined before this finish it; later ones skip it.
  const int joined = joined_.exchange(std::numeric_limits<int>::min() / 2);
  for (int i = 0; i < kSpin && finished_.load() != joined; ++i) Pause();
  if (finished_.load() != joined) {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return finished_.load() == joined; });
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t units = (n + grain - 1) / grain, parts = size();
  if (parts == 1 || units == 1) {
    fn(0, n);
    return;
  }
  // Chunks of about a quarter of a thread's share, claimed in order by whichever thread is
  // free: a thread the OS parks (a busy neighbour on a small machine) delays its chunk, not the
  // step. Each unit's result never depends on the chunk it lands in (every caller computes units
  // independently), so the bits do not either.
  const int64_t chunk = std::max<int64_t>(1, units / (parts * 4));
  std::atomic<int64_t> next{0};
  Run([&](int) {
    for (int64_t c = next.fetch_add(chunk); c < units; c = next.fetch_add(chunk)) {
      fn(c * grain, std::min(n, (c + chunk) * grain));
    }
  });
}

}  // namespace lensd
