// JobSinks that turn scheduler results into v1 stream messages on a StreamReactor's Outbox.
#ifndef LENSD_SERVER_SINKS_H_
#define LENSD_SERVER_SINKS_H_

#include <memory>
#include <string>
#include <vector>

#include "engine/model/tokenizer.h"
#include "lensd/v1/lensd.pb.h"
#include "server/job.h"
#include "server/request_edge.h"
#include "server/stream_reactor.h"

namespace lensd {

grpc::Status ToGrpc(const absl::Status& status);

// Length of the incomplete UTF-8 sequence at the end of `s` (0 when it ends cleanly), so that
// streamed text pieces never split a character.
size_t IncompleteUtf8Tail(const std::string& s);

class GenerateSink final : public JobSink {
 public:
  using Outbox = StreamReactor<v1::GenerateEvent>::Outbox;
  GenerateSink(std::shared_ptr<Outbox> out, const Tokenizer* tokenizer, std::vector<int32_t> prompt)
      : out_(std::move(out)), tokenizer_(tokenizer), prompt_(std::move(prompt)) {}
  bool Cancelled() const override { return out_->Cancelled(); }
  void OnToken(int32_t id, int index) override;
  void OnTensor(int, HookId, TensorView) override {}
  void OnLogits(int, int, TensorView) override {}
  void OnFinish(const absl::Status& status, const JobStats& stats) override;

 private:
  std::shared_ptr<Outbox> out_;
  const Tokenizer* tokenizer_;
  std::vector<int32_t> prompt_;
  std::vector<int> ids_;
  size_t emitted_ = 0;  // bytes of decoded text already sent
};

class CaptureSink final : public JobSink {
 public:
  using Outbox = StreamReactor<v1::CacheMessage>::Outbox;
  // `feature_top_k` > 0: SAE feature activations go out as top-k indices + values.
  CaptureSink(std::shared_ptr<Outbox> out, PositionSlice slice, DType dtype,
              std::vector<int64_t> prompt_lengths, int feature_top_k = 0)
      : out_(std::move(out)),
        slice_(slice),
        dtype_(dtype),
        lengths_(std::move(prompt_lengths)),
        feature_top_k_(feature_top_k) {}
  bool Cancelled() const override { return out_->Cancelled(); }
  void OnToken(int32_t, int) override {}
  void OnTensor(int prompt, HookId id, TensorView value) override;
  void OnLogits(int prompt, int first, TensorView value) override;
  void OnGradient(int prompt, HookId id, TensorView value) override;
  void OnFinish(const absl::Status& status, const JobStats& stats) override;

 private:
  void Send(const WireTensor& meta, const Buffer& data);
  void SendHook(int prompt, HookId id, bool grad, TensorView value);
  std::shared_ptr<Outbox> out_;
  PositionSlice slice_;
  DType dtype_;
  std::vector<int64_t> lengths_;
  int feature_top_k_ = 0;
  int64_t bytes_sent_ = 0;
};

}  // namespace lensd

#endif  // LENSD_SERVER_SINKS_H_
