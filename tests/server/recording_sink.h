// A JobSink for scheduler tests that keeps everything a job reports (tokens, tensors and
// logits by prompt and name, the final status and stats), optionally cancelling after n tokens.
#ifndef LENSD_TESTS_SERVER_RECORDING_SINK_H_
#define LENSD_TESTS_SERVER_RECORDING_SINK_H_

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "server/job.h"

namespace lensd::testing {

class RecordingSink : public JobSink {
 public:
  bool Cancelled() const override { return cancel_after_ >= 0 && tokens_.size() >= size_t(cancel_after_); }
  void OnToken(int32_t id, int index) override {
    EXPECT_EQ(index, static_cast<int>(tokens_.size()));
    tokens_.push_back(id);
  }
  void OnTensor(int prompt, HookId id, TensorView v) override { Keep(prompt, HookName(id), v); }
  void OnLogits(int prompt, int, TensorView v) override { Keep(prompt, "logits", v); }
  void OnGradient(int prompt, HookId id, TensorView v) override {
    Keep(prompt, HookName(id) + "_grad", v);
  }
  void OnFinish(const absl::Status& status, const JobStats& stats) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status, stats_ = stats, finished_ = true;
    cv_.notify_all();
  }
  // True once OnFinish ran; callers ASSERT it, so that a timed-out test stops instead of
  // reading what the scheduler thread may still be writing.
  [[nodiscard]] bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return finished_; });
  }
  void CancelAfter(int n) { cancel_after_ = n; }
  // Whether prompt `prompt` received every tensor of `want` (a RunWithCache cache), with its
  // shape and the same bits.
  ::testing::AssertionResult Received(int prompt, const std::map<std::string, Buffer>& want) const {
    for (const auto& [name, buffer] : want) {
      auto it = tensors_.find({prompt, name});
      if (it == tensors_.end()) return ::testing::AssertionFailure() << name << " missing";
      const Buffer& got = it->second;
      if (!(got.shape() == buffer.shape()) ||
          std::memcmp(got.As<char>(), buffer.As<char>(), got.NumBytes()) != 0) {
        return ::testing::AssertionFailure() << name << " differs";
      }
    }
    return ::testing::AssertionSuccess();
  }

  std::vector<int32_t> tokens_;
  std::map<std::pair<int, std::string>, Buffer> tensors_;
  absl::Status status_;
  JobStats stats_;

 private:
  void Keep(int prompt, const std::string& name, TensorView v) {
    Buffer b = Buffer::Host(v.dtype, v.shape);
    std::memcpy(b.As<char>(), v.data, v.NumBytes());
    tensors_[{prompt, name}] = std::move(b);
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false;
  std::atomic<int> cancel_after_{-1};
};

}  // namespace lensd::testing

#endif  // LENSD_TESTS_SERVER_RECORDING_SINK_H_
