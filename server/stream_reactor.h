// A server-streaming callback reactor fed from another thread. Producers (scheduler sinks)
// hold the reactor's Outbox, which outlives the reactor: once gRPC is done with the call,
// pushes are dropped. Nothing here blocks; writes are issued one at a time as the previous
// one completes. A stream whose in-flight write makes no progress for the stall timeout is
// cancelled by the service's watchdog (CheckStall), so a client that stops reading holds at
// most what was queued for it, never more.
#ifndef LENSD_SERVER_STREAM_REACTOR_H_
#define LENSD_SERVER_STREAM_REACTOR_H_

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>

namespace lensd {

// What the watchdog and the scheduler need to know about any stream.
class StreamState {
 public:
  virtual ~StreamState() = default;
  // True once the client cancelled, a write failed, the call ended, or the stream stalled.
  virtual bool Cancelled() const = 0;
  // Cancels the call when a write has been pending for longer than `timeout`.
  virtual void CheckStall(std::chrono::steady_clock::time_point now,
                          std::chrono::steady_clock::duration timeout) = 0;
};

template <class Msg>
class StreamReactor final : public grpc::ServerWriteReactor<Msg> {
 public:
  class Outbox final : public StreamState {
   public:
    // Queues `msg`; starts a write when none is in flight. Dropped after Close or call end.
    void Push(Msg msg) {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      if (!Open()) return;
      queue_.push_back(std::move(msg));
      if (!writing_) StartNext();
    }
    // Ends the stream with `status` after the queued messages (errors drop what is queued).
    void Close(const grpc::Status& status) {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      if (!Open()) return;
      closing_ = true;
      status_ = status;
      if (!status.ok()) queue_.erase(queue_.begin() + (writing_ ? 1 : 0), queue_.end());
      if (!writing_) FinishOnce(status_);
    }
    bool Cancelled() const override {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      return reactor_ == nullptr || broken_ || cancelled_.load();
    }
    void CheckStall(std::chrono::steady_clock::time_point now,
                    std::chrono::steady_clock::duration timeout) override {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      if (reactor_ == nullptr || !writing_ || broken_ || now - progress_ < timeout) return;
      broken_ = true;
      spdlog::warn("cancelling a stream whose client stopped reading ({} messages queued)",
                   queue_.size());
      ctx_->TryCancel();
    }

   private:
    friend class StreamReactor;
    // Writes may still be started: the call is alive, not closing, not finished or broken
    // (after a failed write gRPC forbids further writes).
    bool Open() const { return reactor_ != nullptr && !closing_ && !finished_ && !broken_; }
    void StartNext() {
      writing_ = true;
      progress_ = std::chrono::steady_clock::now();
      reactor_->StartWrite(&queue_.front());
    }
    void FinishOnce(const grpc::Status& status) {
      if (finished_) return;
      finished_ = true;
      reactor_->Finish(status);
    }
    void WriteDone(bool ok) {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      writing_ = false;
      queue_.pop_front();
      progress_ = std::chrono::steady_clock::now();
      if (!ok || broken_) {  // client gone, or cancelled by the stall watchdog
        broken_ = true;
        queue_.clear();
        FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the stream was closed"));
      } else if (!queue_.empty()) {
        StartNext();
      } else if (closing_) {
        FinishOnce(status_);
      }
    }
    void Detach() {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      reactor_ = nullptr;
      queue_.clear();
    }

    // Recursive: gRPC may run a reaction inline inside StartWrite/Finish.
    mutable std::recursive_mutex mu_;
    StreamReactor* reactor_ = nullptr;
    grpc::CallbackServerContext* ctx_ = nullptr;
    std::deque<Msg> queue_;  // front is in flight while writing_
    bool writing_ = false, closing_ = false, finished_ = false, broken_ = false;
    std::atomic<bool> cancelled_{false};
    grpc::Status status_;
    std::chrono::steady_clock::time_point progress_;
  };

  explicit StreamReactor(grpc::CallbackServerContext* ctx) : outbox_(std::make_shared<Outbox>()) {
    outbox_->reactor_ = this;
    outbox_->ctx_ = ctx;
  }
  const std::shared_ptr<Outbox>& outbox() const { return outbox_; }

  void OnWriteDone(bool ok) override {
    std::shared_ptr<Outbox> keep = outbox_;  // OnDone may run as soon as Finish is called
    keep->WriteDone(ok);
  }
  void OnCancel() override { outbox_->cancelled_ = true; }
  void OnDone() override {
    outbox_->Detach();
    delete this;
  }

 private:
  std::shared_ptr<Outbox> outbox_;
};

}  // namespace lensd

#endif  // LENSD_SERVER_STREAM_REACTOR_H_
