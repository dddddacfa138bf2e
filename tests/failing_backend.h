// A backend decorator for tests that fails like CudaBackend when device memory runs out: the
// armed Allocate fails with RESOURCE_EXHAUSTED, records the error and every later op is
// skipped until TakeError (Backend::TakeError's contract). With `captures`, it also accepts
// every graph step and then reports its recording failed, as a CUDA graph capture that was
// invalidated does (Backend::EndGraphStep false: the step must run again normally). Installed
// with LoadOptions::wrap_backend.
#ifndef LENSD_TESTS_FAILING_BACKEND_H_
#define LENSD_TESTS_FAILING_BACKEND_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"

namespace lensd::testing {

class FailingBackend final : public Backend {
 public:
  // When *fail_in is n > 0, the n-th Allocate from then on (on any backend sharing it) fails.
  FailingBackend(std::unique_ptr<Backend> inner, std::shared_ptr<std::atomic<int>> fail_in,
                 std::shared_ptr<std::atomic<int>> captures = nullptr)
      : inner_(std::move(inner)), fail_in_(std::move(fail_in)), captures_(std::move(captures)) {}

  // LoadOptions::wrap_backend for backends sharing `fail_in`.
  static std::function<std::unique_ptr<Backend>(std::unique_ptr<Backend>)> Wrapper(
      std::shared_ptr<std::atomic<int>> fail_in) {
    return [fail_in](std::unique_ptr<Backend> inner) -> std::unique_ptr<Backend> {
      return std::make_unique<FailingBackend>(std::move(inner), fail_in);
    };
  }

  // LoadOptions::wrap_backend whose graph steps all fail to record; counts them in `captures`.
  static std::function<std::unique_ptr<Backend>(std::unique_ptr<Backend>)> CaptureFailing(
      std::shared_ptr<std::atomic<int>> captures) {
    return [captures](std::unique_ptr<Backend> inner) -> std::unique_ptr<Backend> {
      return std::make_unique<FailingBackend>(std::move(inner),
                                              std::make_shared<std::atomic<int>>(0), captures);
    };
  }

  std::string Name() const override { return inner_->Name(); }
  bool BeginGraphStep(const GraphKey& key) override {
    if (captures_ == nullptr) return inner_->BeginGraphStep(key);
    ++*captures_;
    return true;  // the ops run (on the CPU, for real) as if recorded...
  }
  bool EndGraphStep() override {
    return captures_ == nullptr && inner_->EndGraphStep();  // ...and the recording failed
  }
  absl::StatusOr<Buffer> Allocate(DType dtype, Shape shape) override {
    if (!error_.ok()) return error_;
    if (fail_in_->load() > 0 && fail_in_->fetch_sub(1) == 1) {
      error_ = absl::ResourceExhaustedError(Name() + ": out of device memory (injected)");
      return error_;
    }
    return inner_->Allocate(dtype, shape);
  }
  absl::StatusOr<Buffer> AllocateMatrix(DType dtype, Shape shape) override {
    return inner_->AllocateMatrix(dtype, shape);
  }
  void UploadMatrix(const float* host, TensorView dst) override { inner_->UploadMatrix(host, dst); }
  void Upload(const float* host, TensorView dst) override {
    if (dst.data != nullptr) inner_->Upload(host, dst);
  }
  void Download(TensorView src, float* host) override {
    if (error_.ok()) inner_->Download(src, host);
  }
  void CaptureAsync(TensorView src, const std::function<void(TensorView)>& deliver) override {
    if (error_.ok()) inner_->CaptureAsync(src, deliver);
  }
  void FlushCaptures() override { inner_->FlushCaptures(); }
  void Linear(TensorView x, TensorView w, TensorView bias, TensorView y) override {
    if (error_.ok()) inner_->Linear(x, w, bias, y);
  }
  void Gather(TensorView table, const int32_t* ids, TensorView y) override {
    if (error_.ok()) inner_->Gather(table, ids, y);
  }
  void Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps, TensorView y,
            TensorView normalized, TensorView scale) override {
    if (error_.ok()) inner_->Norm(kind, x, w, b, eps, y, normalized, scale);
  }
  void Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions,
            float scale) override {
    if (error_.ok()) inner_->Rope(x, inv_freq, rotary_dim, positions, scale);
  }
  void WriteKv(TensorView k, TensorView v, const int32_t* slots, KvLayerView kv) override {
    if (error_.ok()) inner_->WriteKv(k, v, slots, kv);
  }
  void Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                 const AttentionParams& params, TensorView z) override {
    if (error_.ok()) inner_->Attention(q, kv, seqs, params, z);
  }
  void Activation(ActKind kind, TensorView x, TensorView y) override {
    if (error_.ok()) inner_->Activation(kind, x, y);
  }
  void GatedActivation(ActKind kind, TensorView gate, TensorView up, TensorView y) override {
    if (error_.ok()) inner_->GatedActivation(kind, gate, up, y);
  }
  TensorView MatrixRows(TensorView w, int64_t begin, int64_t n) override {
    return inner_->MatrixRows(w, begin, n);
  }
  void AddRowsScaled(TensorView src, const int32_t* rows, const float* scales,
                     TensorView dst) override {
    if (error_.ok()) inner_->AddRowsScaled(src, rows, scales, dst);
  }
  void ScaleAndCap(TensorView x, float scale, float cap) override {
    if (error_.ok()) inner_->ScaleAndCap(x, scale, cap);
  }
  void Add(TensorView a, TensorView b, TensorView y) override {
    if (error_.ok()) inner_->Add(a, b, y);
  }
  void Copy(TensorView src, TensorView dst) override {
    if (error_.ok()) inner_->Copy(src, dst);
  }
  void ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan) override {
    if (error_.ok()) inner_->ApplyRowOps(x, source, plan);
  }
  void Renormalize(TensorView normalized, TensorView before, TensorView after, TensorView w,
                   TensorView b, TensorView y) override {
    if (error_.ok()) inner_->Renormalize(normalized, before, after, w, b, y);
  }
  void Synchronize() override { inner_->Synchronize(); }
  absl::Status TakeError() override { return std::exchange(error_, absl::OkStatus()); }

 private:
  std::unique_ptr<Backend> inner_;
  std::shared_ptr<std::atomic<int>> fail_in_;
  std::shared_ptr<std::atomic<int>> captures_;
  absl::Status error_;
};

}  // namespace lensd::testing

#endif  // LENSD_TESTS_FAILING_BACKEND_H_
