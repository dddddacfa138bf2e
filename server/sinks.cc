#include "server/sinks.h"

#include <algorithm>

namespace lensd {

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

size_t IncompleteUtf8Tail(const std::string& s) {
  // Walk back over at most 3 continuation bytes to the lead byte and compare the sequence
  // length it announces with what is present.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return want > back ? back : 0;
  }
  return 0;
}

void GenerateSink::OnToken(int32_t id, int index) {
  ids_.push_back(id);
  v1::GenerateEvent event;
  v1::TokenEvent* token = event.mutable_token();
  token->set_id(id);
  token->set_index(index);
  if (tokenizer_ != nullptr) {
    const std::string text = tokenizer_->Decode(ids_);
    const size_t end = text.size() - IncompleteUtf8Tail(text);
    // A tokenizer may rewrite earlier text (SentencePiece's leading space); then nothing is
    // streamed here and GenerateDone.text stays authoritative.
    if (end > emitted_) {
      token->set_text(text.substr(emitted_, end - emitted_));
      emitted_ = end;
    }
  }
  out_->Push(std::move(event));
}

void GenerateSink::OnFinish(const absl::Status& status, const JobStats& stats) {
  if (!status.ok()) {
    out_->Close(ToGrpc(status));
    return;
  }
  v1::GenerateEvent event;
  v1::GenerateDone* done = event.mutable_done();
  done->set_finish_reason(ToWire(stats.finish));
  done->mutable_usage()->set_prompt_tokens(static_cast<int>(prompt_.size()));
  done->mutable_usage()->set_completion_tokens(static_cast<int>(stats.generated.size()));
  for (int32_t id : prompt_) done->add_prompt_ids(id);
  for (int32_t id : stats.generated) done->add_ids(id);
  if (tokenizer_ != nullptr) {
    done->set_text(tokenizer_->Decode(std::vector<int>(stats.generated.begin(), stats.generated.end())));
  }
  done->set_queue_ms(stats.queue_ms);
  done->set_time_to_first_token_ms(stats.first_token_ms);
  done->set_total_ms(stats.total_ms);
  done->set_preemptions(stats.preemptions);
  out_->Push(std::move(event));
  out_->Close(grpc::Status::OK);
}

void CaptureSink::Send(const WireTensor& meta, const Buffer& data) {
  const size_t total = data.NumBytes();
  size_t offset = 0;
  do {
    const size_t n = std::min(kMaxChunkBytes, total - offset);
    v1::CacheMessage message;
    v1::TensorChunk* chunk = message.mutable_chunk();
    FillTensorInfo(meta, chunk->mutable_tensor());
    chunk->set_offset(static_cast<int64_t>(offset));
    chunk->set_data(data.As<char>() + offset, n);
    offset += n;
    chunk->set_last(offset == total);
    out_->Push(std::move(message));
  } while (offset < total);
  bytes_sent_ += static_cast<int64_t>(total);
}

void CaptureSink::SendHook(int prompt, HookId id, bool grad, TensorView value) {
  const auto range = slice_.Resolve(lengths_[prompt]);
  using Part = WireTensor::Part;
  if (!grad && feature_top_k_ > 0 && IsFeatureHook(id)) {
    auto [indices, values] = TopFeatures(value, range, feature_top_k_, dtype_);
    Send({prompt, id, false, false, Part::kTopIndices, indices.shape(), DType::kI32}, indices);
    Send({prompt, id, false, false, Part::kTopValues, values.shape(), dtype_}, values);
    return;
  }
  Buffer data = SliceAndConvert(value, PositionAxis(id.point), range, dtype_);
  Send({prompt, id, false, grad, Part::kDense, data.shape(), dtype_}, data);
}

void CaptureSink::OnTensor(int prompt, HookId id, TensorView value) {
  SendHook(prompt, id, false, value);
}

void CaptureSink::OnGradient(int prompt, HookId id, TensorView value) {
  SendHook(prompt, id, true, value);
}

void CaptureSink::OnLogits(int prompt, int /*first: always 0 here*/, TensorView value) {
  Buffer data = SliceAndConvert(value, 1, {0, value.shape[1]}, dtype_);
  Send({prompt,
        {HookPoint::kUnembedOut, -1},
        true,
        false,
        WireTensor::Part::kDense,
        data.shape(),
        dtype_},
       data);
}

void CaptureSink::OnFinish(const absl::Status& status, const JobStats& stats) {
  if (!status.ok()) {
    out_->Close(ToGrpc(status));
    return;
  }
  v1::CacheMessage message;
  v1::CacheDone* done = message.mutable_done();
  done->set_queue_ms(stats.queue_ms);
  done->set_compute_ms(stats.compute_ms);
  done->set_total_ms(stats.total_ms);
  done->set_bytes_sent(bytes_sent_);
  done->mutable_objective()->Add(stats.objective.begin(), stats.objective.end());
  out_->Push(std::move(message));
  out_->Close(grpc::Status::OK);
}

}  // namespace lensd
