// The CPU backend's compute threads: a fixed team that runs one parallel loop at a time. A
// loop's chunks go to whichever thread is free, and a loop ends when its caller (thread 0) has
// run out of chunks and the workers that joined in time have finished theirs: a worker the OS
// has parked (a busy neighbour) neither holds up a chunk nor the loop's end. Results never
// depend on who ran what (ParallelFor's contract). Between loops the workers spin briefly,
// then sleep on a condition variable: an idle or oversubscribed machine is not burned by
// busy-waiting barriers (the OpenMP runtime's spin cost 12x on a shared 2-core machine).
#ifndef LENSD_ENGINE_CPU_THREAD_POOL_H_
#define LENSD_ENGINE_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lensd {

class ThreadPool {
 public:
  // `threads` >= 1 in all, the calling thread included.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs fn(thread) on the calling thread and on every worker that wakes before the caller's
  // own call returns; returns when those have finished. Not reentrant: one loop at a time (the
  // backend's single compute thread calls it).
  void Run(const std::function<void(int thread)>& fn);
  // fn(begin, end) over [0, n) in contiguous chunks claimed by whichever thread is free (about
  // four per thread); `grain`: chunks are whole multiples of it, except the last. Callers
  // must compute each unit independently of the others in its chunk.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void Work(int thread);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  const std::function<void(int)>* job_ = nullptr;  // set before generation_ moves
  std::atomic<uint64_t> generation_{0};            // bumps per Run (under mu_)
  // Workers that joined the current loop (>= 0 while it is open; closed by the caller, after
  // which late workers skip it) and those of them that have finished.
  std::atomic<int> joined_{0};
  std::atomic<int> finished_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace lensd

#endif  // LENSD_ENGINE_CPU_THREAD_POOL_H_
