// CudaBackend's declaration, private to engine/cuda. Its definitions live by responsibility:
// this header (the step guard and error protocol, input staging), cuda_backend.cc (devices,
// memory, graph steps), cuda_transfers.cc (host and peer copies, captures), cuda_ops.cc (GEMM
// and elementwise kernels), cuda_attention.cc and cuda_row_ops.cc.
#ifndef LENSD_ENGINE_CUDA_CUDA_BACKEND_IMPL_H_
#define LENSD_ENGINE_CUDA_CUDA_BACKEND_IMPL_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/cuda/capture_stream.h"
#include "engine/cuda/cuda_handles.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/graph_step.h"

namespace lensd {

inline float* F(TensorView t) { return t.As<float>(); }
inline const float* CF(TensorView t) { return t.empty() ? nullptr : t.As<float>(); }

// Calls fn(k_pool, v_pool) with the pools' element type: the KV dtype dispatch, in one place.
template <typename Fn>
cudaError_t OnKvPools(KvLayerView kv, Fn&& fn) {
  switch (kv.k.dtype) {
    case DType::kF32:
      return fn(kv.k.As<float>(), kv.v.As<float>());
    case DType::kBF16:
      return fn(kv.k.As<__nv_bfloat16>(), kv.v.As<__nv_bfloat16>());
    case DType::kF16:
      return fn(kv.k.As<__half>(), kv.v.As<__half>());
    case DType::kI32:
      return cudaErrorInvalidValue;  // pools are floating point (programmer error)
  }
  return cudaErrorInvalidValue;
}

class CudaBackend final : public Backend {
 public:
  static constexpr size_t kWorkspace = cuda::Gemm::kWorkspace;
  static constexpr size_t kStaging = size_t{16} << 20;
  // Pinned memory for ops' host inputs (ids, positions, slots, block tables) of a step.
  static constexpr size_t kInputs = size_t{8} << 20;
  // Device ring and pinned host ring of the capture stream: a few layers' worth of hooks in
  // flight for GPT-2-small-sized models at batch 8 x 256 tokens.
  static constexpr size_t kCaptureRing = size_t{256} << 20;
  // A graph step's device arena (all its activations, never freed within the step) and its
  // pinned inputs: enough for decode at batch 64 of a Llama-3.2-1B-sized model.
  static constexpr size_t kGraphArena = size_t{256} << 20;
  static constexpr size_t kGraphMirror = size_t{16} << 20;
  // Prefill chunks of at least this many queries whose maps are not captured use the flash
  // kernel.
  static constexpr int kFlashMinQueries = 16;

  CudaBackend(int device, int sm_count, cuda::StreamPtr stream, cuda::StreamPtr upload_stream,
              cuda::EventPtr compute_done, cuda::BlasLtPtr blas, Buffer workspace,
              cuda::PinnedPtr staging, cuda::PinnedPtr inputs,
              std::unique_ptr<cuda::CaptureStream> capture)
      : device_(device),
        stream_(std::move(stream)),
        upload_stream_(std::move(upload_stream)),
        compute_done_(std::move(compute_done)),
        blas_(std::move(blas)),
        workspace_(std::move(workspace)),
        gemm_(blas_.get(), sm_count, workspace_.As<void>()),
        staging_host_(std::move(staging)),
        inputs_host_(std::move(inputs)),
        capture_(std::move(capture)) {}

  std::string Name() const override { return absl::StrCat("cuda:", device_); }

  // cuda_backend.cc: memory and graph steps.
  absl::StatusOr<Buffer> Allocate(DType dtype, Shape shape) override;
  bool BeginGraphStep(const GraphKey& key) override;
  bool EndGraphStep() override;
  void Synchronize() override;

  // cuda_transfers.cc. Host <-> device through the bounded pinned staging buffer, one chunk at
  // a time, converting between float32 and the device tensor's dtype on the way: loading a
  // model never needs more pinned memory than kStaging, whatever the tensor size.
  // Upload runs on a stream of its own, after the compute stream's work queued so far (the
  // buffer may be one compute last read), and returns once the data is on the device; so the
  // offload prefetch thread's uploads overlap compute. It touches no per-step state (error_,
  // last_op_): only the compute thread does.
  void Upload(const float* host, TensorView dst) override;
  void Download(TensorView src, float* host) override;
  void CaptureAsync(TensorView src, const std::function<void(TensorView)>& deliver) override;
  void FlushCaptures() override { capture_->Flush(); }
  bool CopyToPeer(Backend& to, TensorView src, TensorView dst,
                  std::shared_ptr<void>* ready) override;
  void WaitFor(const std::shared_ptr<void>& ready) override;

  // cuda_ops.cc.
  void Linear(TensorView x, TensorView w, TensorView bias, TensorView y) override;
  void Gather(TensorView table, const int32_t* ids, TensorView y) override;
  void Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps, TensorView y,
            TensorView normalized, TensorView scale) override;
  void Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions,
            float scale) override;
  void WriteKv(TensorView k, TensorView v, const int32_t* slots, KvLayerView kv) override;
  void Activation(ActKind kind, TensorView x, TensorView y) override;
  void GatedActivation(ActKind kind, TensorView gate, TensorView up, TensorView y) override;
  void ScaleAndCap(TensorView x, float scale, float cap) override;
  void AddRowsScaled(TensorView src, const int32_t* rows, const float* scales,
                     TensorView dst) override;
  void Add(TensorView a, TensorView b, TensorView y) override;
  void Copy(TensorView src, TensorView dst) override;

  // cuda_attention.cc, cuda_row_ops.cc.
  void Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                 const AttentionParams& params, TensorView z) override;
  void ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan) override;

 private:
  absl::Status TakeError() override { return std::exchange(error_, absl::OkStatus()); }

  // --- The step guard and error protocol ------------------------------------------------
  // Selects the device; false once this step has failed (TakeError): the op is skipped.
  bool Use() {
    if (!error_.ok()) return false;
    CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
    return true;
  }
  // After an op's inputs are staged: nothing to launch (graph replay) or the step has failed.
  bool Skip() const { return Replaying() || !error_.ok(); }
  void Fail(absl::Status status) {
    if (status.ok()) return;
    if (graphs_ && graphs_->mode() == cuda::GraphSteps::Mode::kCapture) {
      // Only the recording fails (End then refuses to instantiate it); the step runs again
      // normally, where a real error fails it.
      graphs_->MarkFailed(status.ToString());
      return;
    }
    if (error_.ok()) {
      spdlog::warn("{}: step failed: {}", Name(), status.ToString());
      error_ = std::move(status);
    }
  }
  // Inside the backend's members this shadows cuda::CheckCuda. While a decode step is being
  // recorded as a graph, an error (e.g. cudaErrorStreamCaptureInvalidated) spoils only the
  // recording; EndGraphStep then returns false and the step runs again normally. Out of
  // memory fails the step only. Any other error is sticky (the device is unusable): fatal,
  // naming the last op queued before it (kernel faults surface at a later call).
  void CheckCuda(cudaError_t err, const char* what) {
    if (err == cudaSuccess) {
      last_op_ = what;
      return;
    }
    if (graphs_ && graphs_->mode() == cuda::GraphSteps::Mode::kCapture) {
      cudaGetLastError();
      graphs_->MarkFailed(absl::StrCat(what, ": ", cudaGetErrorString(err)));
      return;
    }
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      Fail(absl::ResourceExhaustedError(absl::StrCat(Name(), ": out of device memory in ", what)));
      return;
    }
    cuda::CheckCuda(err, what, last_op_);
  }
  bool GraphStep() const { return graphs_ && graphs_->mode() != cuda::GraphSteps::Mode::kOff; }
  bool Replaying() const { return graphs_ && graphs_->mode() == cuda::GraphSteps::Mode::kReplay; }

  // --- Staging --------------------------------------------------------------------------
  // Copies `n` host elements into staging slot `slot` (device memory kept across calls)
  // through pinned memory: a copy from pageable memory would first wait for the stream to
  // drain, exposing every launch's latency.
  template <typename T>
  const T* Stage(int slot, const T* host, size_t n) {
    const size_t bytes = n * sizeof(T);
    if (GraphStep()) return static_cast<const T*>(graphs_->Input(host, bytes, stream_.get()));
    Buffer& b = staging_[slot];
    if (!Reserve(b, bytes)) return nullptr;
    if (bytes == 0) return static_cast<const T*>(b.As<void>());
    const void* src = host;
    if (bytes <= kInputs) {
      const size_t size = (bytes + 255) / 256 * 256;
      if (inputs_used_ + size > kInputs) {  // earlier copies may still read the buffer
        CheckCuda(cudaStreamSynchronize(stream_.get()), "input staging");
        inputs_used_ = 0;
      }
      void* pinned = static_cast<char*>(inputs_host_.get()) + inputs_used_;
      inputs_used_ += size;
      std::memcpy(pinned, host, bytes);
      src = pinned;
    }
    CheckCuda(cudaMemcpyAsync(b.As<void>(), src, bytes, cudaMemcpyHostToDevice, stream_.get()),
              "Stage");
    return static_cast<const T*>(b.As<void>());
  }
  // `buffer` holds at least `bytes` (grown on the first steps of a new shape only); false
  // (the step failed, TakeError) when device memory ran out.
  bool Reserve(Buffer& buffer, size_t bytes);
  // x as GEMM input for weights of dtype `in`: x itself for float32, else narrowed into
  // narrow_ on the stream.
  const void* GemmInput(TensorView x, DType in);
  static bool Flash(const AttentionSeq& a, int dh);

  int device_;
  cuda::StreamPtr stream_;
  cuda::StreamPtr upload_stream_;
  cuda::EventPtr compute_done_ ABSL_GUARDED_BY(transfer_mu_);  // what an upload waits for
  cuda::BlasLtPtr blas_;
  Buffer workspace_;
  cuda::Gemm gemm_;
  cuda::PinnedPtr staging_host_ ABSL_GUARDED_BY(transfer_mu_);  // kStaging bytes
  std::mutex transfer_mu_;
  Buffer staging_[14];           // 0-5, 11-13: ops' inputs; 6-10: intervention plans
  cuda::PinnedPtr inputs_host_;  // kInputs bytes; [0, inputs_used_) may be in flight
  size_t inputs_used_ = 0;
  Buffer narrow_;
  std::unique_ptr<cuda::CaptureStream> capture_;
  std::unique_ptr<cuda::GraphSteps> graphs_;  // made at the first graph step
  absl::Status error_;               // this step's failure, until TakeError
  const char* last_op_ = "none";     // the last call that succeeded, for fatal errors
};

}  // namespace lensd

#endif  // LENSD_ENGINE_CUDA_CUDA_BACKEND_IMPL_H_
