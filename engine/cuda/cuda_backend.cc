#include "engine/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/cuda/capture_stream.h"
#include "engine/cuda/cuda_handles.h"
#include "engine/cuda/device_allocator.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/graph_step.h"
#include "engine/cuda/kernels/launchers.h"
#include "engine/cuda/kernels/norm.h"

namespace lensd {
namespace {

using cuda::CheckCuda;

float* F(TensorView t) { return t.As<float>(); }
const float* CF(TensorView t) { return t.empty() ? nullptr : t.As<float>(); }

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

  CudaBackend(int device, int sm_count, cuda::StreamPtr stream, cuda::BlasLtPtr blas,
              Buffer workspace, cuda::PinnedPtr staging, cuda::PinnedPtr inputs,
              std::unique_ptr<cuda::CaptureStream> capture)
      : device_(device),
        stream_(std::move(stream)),
        blas_(std::move(blas)),
        workspace_(std::move(workspace)),
        gemm_(blas_.get(), sm_count, workspace_.As<void>()),
        staging_host_(std::move(staging)),
        inputs_host_(std::move(inputs)),
        capture_(std::move(capture)) {}

  std::string Name() const override { return absl::StrCat("cuda:", device_); }

  absl::StatusOr<Buffer> Allocate(DType dtype, Shape shape) override {
    if (!Use()) return error_;
    Buffer b;
    if (GraphStep()) {  // the arena, so that a replay finds the same addresses
      b = Buffer(graphs_->Allocate(shape.NumElements() * DTypeSize(dtype)), dtype, shape, nullptr);
    } else {
      absl::StatusOr<Buffer> made = cuda::AllocateDevice(device_, stream_.get(), dtype, shape);
      if (!made.ok()) {  // the step fails (TakeError); the device stays usable
        Fail(made.status());
        return made.status();
      }
      b = std::move(*made);
    }
    if (!Replaying()) {
      CheckCuda(cudaMemsetAsync(b.As<void>(), 0, b.NumBytes(), stream_.get()), "cudaMemsetAsync");
    }
    return b;
  }

  // Host <-> device through the bounded pinned staging buffer, one chunk at a time, converting
  // between float32 and the device tensor's dtype on the way: loading a model never needs
  // more pinned memory than kStaging, whatever the tensor size.
  void Upload(const float* host, TensorView dst) override {
    if (dst.data == nullptr) return;  // a failed step's buffer without memory (TakeError)
    std::lock_guard<std::mutex> lock(transfer_mu_);  // the offload prefetch thread uploads too
    CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
    const size_t elem = DTypeSize(dst.dtype), per_chunk = kStaging / elem;
    for (int64_t i = 0; i < dst.NumElements(); i += per_chunk) {
      const size_t n = std::min<size_t>(per_chunk, dst.NumElements() - i);
      ConvertFromF32(host + i, dst.dtype, staging_host_.get(), n);
      CheckCuda(cudaMemcpyAsync(static_cast<char*>(dst.data) + i * elem, staging_host_.get(),
                                n * elem, cudaMemcpyHostToDevice, stream_.get()),
                "Upload");
      CheckCuda(cudaStreamSynchronize(stream_.get()), "Upload sync");
    }
  }

  void Download(TensorView src, float* host) override {
    if (GraphStep()) {  // after the graph has run
      graphs_->DeferDownload([this, src, host] { Download(src, host); });
      return;
    }
    if (!Use()) return;
    std::lock_guard<std::mutex> lock(transfer_mu_);
    const size_t elem = DTypeSize(src.dtype), per_chunk = kStaging / elem;
    for (int64_t i = 0; i < src.NumElements(); i += per_chunk) {
      const size_t n = std::min<size_t>(per_chunk, src.NumElements() - i);
      CheckCuda(cudaMemcpyAsync(staging_host_.get(), static_cast<const char*>(src.data) + i * elem,
                                n * elem, cudaMemcpyDeviceToHost, stream_.get()),
                "Download");
      CheckCuda(cudaStreamSynchronize(stream_.get()), "Download sync");
      ConvertToF32(src.dtype, staging_host_.get(), host + i, n);
    }
  }

  void CaptureAsync(TensorView src, const std::function<void(TensorView)>& deliver) override {
    if (!Use()) return;
    if (src.dtype == DType::kF32 && capture_->Push(src, stream_.get(), deliver)) return;
    capture_->Flush();  // empty, or too large for the ring: synchronously, after the earlier ones
    Backend::CaptureAsync(src, deliver);
  }
  void FlushCaptures() override { capture_->Flush(); }

  bool CopyToPeer(Backend& to, TensorView src, TensorView dst, std::shared_ptr<void>* ready) override {
    auto* peer = dynamic_cast<CudaBackend*>(&to);
    if (peer == nullptr || !Use()) return false;  // failed: the host path skips too
    if (peer->device_ != device_) {  // device_ of a backend never changes: safe to read
      int can = 0;
      cudaDeviceCanAccessPeer(&can, device_, peer->device_);
      if (!can) return false;
      const cudaError_t err = cudaDeviceEnablePeerAccess(peer->device_, 0);
      if (err == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
      else
        CheckCuda(err, "cudaDeviceEnablePeerAccess");
    }
    // On this stream, after the work that produced src; src is freed next on this same
    // stream, so its block is not reused before the copy has read it.
    CheckCuda(cudaMemcpyPeerAsync(dst.data, peer->device_, src.data, device_, src.NumBytes(),
                                  stream_.get()),
              "cudaMemcpyPeerAsync");
    cudaEvent_t event;
    CheckCuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
    CheckCuda(cudaEventRecord(event, stream_.get()), "cudaEventRecord");
    *ready = std::shared_ptr<void>(event, [](void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); });
    return true;
  }

  void WaitFor(const std::shared_ptr<void>& ready) override {
    if (!Use()) return;
    CheckCuda(cudaStreamWaitEvent(stream_.get(), static_cast<cudaEvent_t>(ready.get()), 0),
              "cudaStreamWaitEvent");
  }

  void Linear(TensorView x, TensorView w, TensorView bias, TensorView y) override {
    if (!Use()) return;
    const void* xs = GemmInput(x, w.dtype);
    if (Skip()) return;
    Fail(gemm_.Run(xs, w.data, w.dtype, CF(bias), F(y), static_cast<int>(x.shape[0]),
                   static_cast<int>(w.shape[0]), static_cast<int>(w.shape[1]), stream_.get()));
  }

  bool BeginGraphStep(const GraphKey& key) override {
    if (!Use()) return false;
    if (graphs_ == nullptr) {  // once, at the first decode step
      auto made = cuda::GraphSteps::Create(kGraphArena, kGraphMirror);
      if (!made.ok()) {
        spdlog::warn("cuda:{}: no CUDA graphs: {}", device_, made.status().ToString());
        return false;
      }
      graphs_ = std::move(*made);
    }
    return graphs_->Begin(key, stream_.get());
  }
  bool EndGraphStep() override {
    CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
    return graphs_->End(stream_.get());
  }

  void Gather(TensorView table, const int32_t* ids, TensorView y) override {
    if (!Use()) return;
    const int rows = static_cast<int>(y.shape[0]), d = static_cast<int>(y.shape[1]);
    const int32_t* dids = Stage(0, ids, rows);
    if (Skip()) return;
    cudaError_t err = cudaSuccess;
    switch (table.dtype) {
      case DType::kF32:
        err = cuda::LaunchGather(F(table), dids, rows, d, F(y), stream_.get());
        break;
      case DType::kBF16:
        err = cuda::LaunchGather(table.As<__nv_bfloat16>(), dids, rows, d, F(y), stream_.get());
        break;
      case DType::kF16:
        err = cuda::LaunchGather(table.As<__half>(), dids, rows, d, F(y), stream_.get());
        break;
      case DType::kI32:
        err = cudaErrorInvalidValue;  // tables are floating point (programmer error)
        break;
    }
    CheckCuda(err, "Gather");
  }

  void Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps, TensorView y,
            TensorView normalized, TensorView scale) override {
    if (!Use() || Replaying()) return;
    CheckCuda(cuda::LaunchNorm<float>(kind == NormKind::kLayerNorm, F(x), CF(w), CF(b), eps,
                                      static_cast<int>(x.shape[0]), static_cast<int>(x.shape[1]),
                                      F(y), normalized.empty() ? nullptr : F(normalized),
                                      scale.empty() ? nullptr : F(scale), stream_.get()),
              "Norm");
  }

  void Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions) override {
    if (!Use()) return;
    const int tokens = static_cast<int>(x.shape[0]);
    const int32_t* dpos = Stage(0, positions, tokens);
    if (Skip()) return;
    CheckCuda(cuda::LaunchRope(F(x), F(inv_freq), dpos, tokens, static_cast<int>(x.shape[1]),
                               static_cast<int>(x.shape[2]), rotary_dim, stream_.get()),
              "Rope");
  }

  void WriteKv(TensorView k, TensorView v, const int32_t* slots, KvLayerView kv) override {
    if (!Use()) return;
    const int tokens = static_cast<int>(k.shape[0]);
    const int32_t* dslots = Stage(0, slots, tokens);
    if (Skip()) return;
    const int row = static_cast<int>(k.NumElements() / std::max<int64_t>(1, tokens));
    CheckCuda(OnKvPools(kv,
                        [&](auto* k_pool, auto* v_pool) {
                          return cuda::LaunchWriteKv(F(k), F(v), dslots, tokens, row, k_pool,
                                                     v_pool, stream_.get());
                        }),
              "WriteKv");
  }

  void Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                 const AttentionParams& params, TensorView z) override;
  static constexpr int kFlashMinQueries = 16;
  static bool Flash(const AttentionSeq& a, int dh) {
    return a.n_q >= kFlashMinQueries && a.scores.empty() && a.pattern.empty() &&
           dh <= cuda::kFlashMaxHeadDim;
  }

  void Activation(ActKind kind, TensorView x, TensorView y) override {
    if (!Use() || Replaying()) return;
    CheckCuda(
        cuda::LaunchActivation(static_cast<int>(kind), F(x), F(y), x.NumElements(), stream_.get()),
        "Activation");
  }
  void GatedActivation(ActKind kind, TensorView gate, TensorView up, TensorView y) override {
    if (!Use() || Replaying()) return;
    CheckCuda(cuda::LaunchGatedActivation(static_cast<int>(kind), F(gate), F(up), F(y),
                                          gate.NumElements(), stream_.get()),
              "GatedActivation");
  }
  void Add(TensorView a, TensorView b, TensorView y) override {
    if (!Use() || Replaying()) return;
    CheckCuda(cuda::LaunchAdd(F(a), F(b), F(y), a.NumElements(), stream_.get()), "Add");
  }
  void Copy(TensorView src, TensorView dst) override {
    if (!Use() || Replaying()) return;
    CheckCuda(cudaMemcpyAsync(dst.data, src.data, src.NumBytes(), cudaMemcpyDeviceToDevice,
                              stream_.get()),
              "Copy");
  }
  void ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan) override;
  void Synchronize() override {
    if (GraphStep()) return;  // nothing may wait inside a capture; a replay launches nothing
    CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
    CheckCuda(cudaStreamSynchronize(stream_.get()), "Synchronize");
    inputs_used_ = 0;
  }

 private:
  absl::Status TakeError() override { return std::exchange(error_, absl::OkStatus()); }

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

  // x as GEMM input for weights of dtype `in`: x itself for float32, else narrowed into
  // narrow_ on the stream.
  const void* GemmInput(TensorView x, DType in);
  // `buffer` holds at least `bytes` (grown on the first steps of a new shape only); false
  // (the step failed, TakeError) when device memory ran out.
  bool Reserve(Buffer& buffer, size_t bytes);

  int device_;
  cuda::StreamPtr stream_;
  cuda::BlasLtPtr blas_;
  Buffer workspace_;
  cuda::Gemm gemm_;
  cuda::PinnedPtr staging_host_ ABSL_GUARDED_BY(transfer_mu_);  // kStaging bytes
  std::mutex transfer_mu_;
  Buffer staging_[11];  // 0-5: ops' inputs; 6-10: intervention plans
  cuda::PinnedPtr inputs_host_;  // kInputs bytes; [0, inputs_used_) may be in flight
  size_t inputs_used_ = 0;
  Buffer narrow_;
  std::unique_ptr<cuda::CaptureStream> capture_;
  std::unique_ptr<cuda::GraphSteps> graphs_;  // made at the first graph step
  absl::Status error_;               // this step's failure, until TakeError
  const char* last_op_ = "none";     // the last call that succeeded, for fatal errors
};

bool CudaBackend::Reserve(Buffer& buffer, size_t bytes) {
  if (buffer.NumBytes() >= bytes) return true;
  absl::StatusOr<Buffer> grown =
      cuda::AllocateDevice(device_, stream_.get(), DType::kI32, {int64_t(bytes / 4 + 1)});
  if (!grown.ok()) {
    Fail(grown.status());
    return false;
  }
  buffer = std::move(*grown);
  return true;
}

const void* CudaBackend::GemmInput(TensorView x, DType in) {
  if (in == DType::kF32) return x.data;
  const size_t bytes = x.NumElements() * DTypeSize(in);
  void* narrow = nullptr;
  if (GraphStep()) {
    narrow = graphs_->Allocate(bytes);
    if (Replaying()) return narrow;
  } else {
    if (!Reserve(narrow_, bytes)) return nullptr;
    narrow = narrow_.As<void>();
  }
  const cudaError_t err =
      in == DType::kBF16
          ? cuda::LaunchNarrow(F(x), static_cast<__nv_bfloat16*>(narrow), x.NumElements(),
                               stream_.get())
          : cuda::LaunchNarrow(F(x), static_cast<__half*>(narrow), x.NumElements(), stream_.get());
  CheckCuda(err, "narrow GEMM input");
  return narrow;
}

// Prefill chunks of at least kFlashMinQueries queries whose attention maps are not captured
// take the flash kernel (one launch per sequence); the other queries — decode steps,
// captured maps — take the per-query kernel in one launch.
void CudaBackend::Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                            const AttentionParams& params, TensorView z) {
  const float scale = params.scale;
  const int window = params.window;
  if (!Use()) return;
  const int heads = static_cast<int>(q.shape[1]), dh = static_cast<int>(q.shape[2]);
  const int kv_heads = static_cast<int>(kv.k.shape[1]);
  std::vector<cuda::AttentionQuery> queries;
  std::vector<int32_t> tables;
  std::vector<float*> scores, patterns;
  std::vector<int> n_q, offsets;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttentionSeq& a = seqs[s];
    offsets.push_back(static_cast<int>(tables.size()));
    const int n_blocks = (a.start_pos + a.n_q + kv.block_size - 1) / kv.block_size;
    tables.insert(tables.end(), a.block_table, a.block_table + n_blocks);
    if (GraphStep()) tables.resize(offsets.back() + graphs_->key().table_width, 0);  // fixed size
    if (!Flash(a, dh)) {
      for (int i = 0; i < a.n_q; ++i) {
        queries.push_back({a.q_begin + i, a.start_pos + i, offsets.back(), static_cast<int>(s), i,
                           static_cast<int>(a.input)});
      }
    }
    scores.push_back(a.scores.empty() ? nullptr : F(a.scores));
    patterns.push_back(a.pattern.empty() ? nullptr : F(a.pattern));
    n_q.push_back(a.n_q);
  }
  const int32_t* dtables = Stage(1, tables.data(), tables.size());
  const auto* dqueries = Stage(2, queries.data(), queries.size());
  float* const* dscores = Stage(3, scores.data(), scores.size());
  float* const* dpatterns = Stage(4, patterns.data(), patterns.size());
  const int* dnq = Stage(5, n_q.data(), n_q.size());
  if (Skip()) return;
  CheckCuda(OnKvPools(kv,
                      [&](auto* k_pool, auto* v_pool) {
                        return cuda::LaunchAttention(
                            F(q), k_pool, v_pool, dtables, dqueries,
                            static_cast<int>(queries.size()), heads, kv_heads, dh, kv.block_size,
                            scale, window, dscores, dpatterns, dnq, F(z), stream_.get());
                      }),
            "Attention");
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttentionSeq& a = seqs[s];
    if (!Flash(a, dh)) continue;
    CheckCuda(OnKvPools(kv,
                        [&](auto* k_pool, auto* v_pool) {
                          return cuda::LaunchFlashAttention(
                              F(q), k_pool, v_pool, dtables + offsets[s], a.q_begin, a.n_q,
                              a.start_pos, heads, kv_heads, dh, kv.block_size, scale, window,
                              F(z), stream_.get());
                        }),
              "FlashAttention");
  }
}

void CudaBackend::ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan) {
  if (!Use() || plan.empty()) return;
  std::vector<int> row_begin;
  std::vector<int64_t> scratch_at;
  int64_t total = 0;
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    if (i == 0 || plan.ops[i].row != plan.ops[i - 1].row) row_begin.push_back(static_cast<int>(i));
    scratch_at.push_back(total);
    total += plan.ops[i].n;
  }
  const int rows = static_cast<int>(row_begin.size());
  row_begin.push_back(static_cast<int>(plan.ops.size()));
  absl::StatusOr<Buffer> scratch = Allocate(DType::kF32, {std::max<int64_t>(total, 1)});
  if (!scratch.ok()) return;  // recorded (TakeError)
  const RowOp* ops = Stage(6, plan.ops.data(), plan.ops.size());
  const int* begin = Stage(7, row_begin.data(), row_begin.size());
  const RowSegment* segs = Stage(8, plan.segments.data(), plan.segments.size());
  const float* values = Stage(9, plan.values.data(), plan.values.size());
  const int64_t* at = Stage(10, scratch_at.data(), scratch_at.size());
  if (Skip()) return;
  CheckCuda(cuda::LaunchRowOps(ops, static_cast<int>(plan.ops.size()), begin, rows, segs, values,
                               at, F(scratch->view()), source.empty() ? F(x) : F(source), F(x),
                               stream_.get()),
            "ApplyRowOps");
}

}  // namespace

int CudaDeviceCount() { return cuda::DeviceCount(); }

absl::StatusOr<int> CudaDeviceCountOrWhy() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) return n;
  cudaGetLastError();  // not sticky: clear it
  return absl::UnavailableError(cudaGetErrorString(e));
}

namespace {
absl::Status CheckDeviceExists(int device) {
  const int count = cuda::DeviceCount();
  if (device >= 0 && device < count) return absl::OkStatus();
  return absl::NotFoundError(
      absl::StrCat("cuda:", device, " does not exist (", count, " CUDA devices visible)"));
}
}  // namespace

absl::StatusOr<std::pair<int64_t, int64_t>> CudaMemoryInfo(int device) {
  RETURN_IF_ERROR(CheckDeviceExists(device));
  RETURN_IF_ERROR(cuda::CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  size_t free = 0, total = 0;
  RETURN_IF_ERROR(cuda::CudaStatus(cudaMemGetInfo(&free, &total), "cudaMemGetInfo"));
  return std::pair<int64_t, int64_t>(static_cast<int64_t>(free), static_cast<int64_t>(total));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  RETURN_IF_ERROR(CheckDeviceExists(device));
  RETURN_IF_ERROR(cuda::CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  int sm_count = 0;
  RETURN_IF_ERROR(cuda::CudaStatus(
      cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device), "SM count"));
  ASSIGN_OR_RETURN(cuda::StreamPtr stream, cuda::NewStream());
  ASSIGN_OR_RETURN(cuda::BlasLtPtr blas, cuda::NewBlasLt());
  ASSIGN_OR_RETURN(Buffer workspace, cuda::AllocateDevice(device, stream.get(), DType::kF32,
                                                          {int64_t(CudaBackend::kWorkspace / 4)}));
  ASSIGN_OR_RETURN(cuda::PinnedPtr staging, cuda::PinnedAlloc(CudaBackend::kStaging));
  ASSIGN_OR_RETURN(cuda::PinnedPtr inputs, cuda::PinnedAlloc(CudaBackend::kInputs));
  ASSIGN_OR_RETURN(auto capture, cuda::CaptureStream::Create(device, CudaBackend::kCaptureRing));
  return std::unique_ptr<Backend>(new CudaBackend(device, sm_count, std::move(stream),
                                                  std::move(blas), std::move(workspace),
                                                  std::move(staging), std::move(inputs),
                                                  std::move(capture)));
}

}  // namespace lensd
