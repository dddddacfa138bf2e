// The small set of device operations the forward pass is written against. One Backend
// instance per device; it is used by one compute thread at a time, except that Upload may
// also be called concurrently by the offload prefetch thread (into memory no op is using).
// All TensorViews passed to a backend live in that backend's memory unless stated otherwise.
#ifndef LENSD_ENGINE_BACKEND_BACKEND_H_
#define LENSD_ENGINE_BACKEND_BACKEND_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/gradient_ops.h"
#include "engine/backend/row_ops.h"
#include "engine/core/tensor.h"
#include "engine/model/config.h"

namespace lensd {

// MatrixRows's granularity (the CPU backend packs matrices in panels of 16 rows).
inline constexpr int64_t kMatrixRowAlign = 16;

// One sequence's share of an attention call. Queries are rows [q_begin, q_begin + n_q) of the
// batch; they sit at positions [start_pos, start_pos + n_q) and attend to keys
// [0, start_pos + n_q) read from the KV pool through `block_table`.
struct AttentionSeq {
  // Where the attention weights come from. kScores and kPattern serve interventions on the
  // maps (the unfused path): the caller edited `scores` or `pattern`, and attention continues
  // from there. Given scores are used as they are, -inf meaning weight 0.
  enum class Input {
    kQueries,  // scores = scale · q·k (causal, window); writes scores/pattern if present
    kScores,   // pattern = softmax(scores); a row of only -inf: pattern 0, z 0
    kPattern,  // z = pattern · v only
  };
  int q_begin = 0;
  int n_q = 0;
  int start_pos = 0;
  const int32_t* block_table = nullptr;  // host memory; block ids of this sequence
  TensorView scores;   // optional out [H, n_q, start_pos + n_q]: q·k/√dh, masked = -inf
  TensorView pattern;  // optional out [H, n_q, start_pos + n_q]: softmax of scores
  Input input = Input::kQueries;
};

// The K/V pool of one layer: [num_blocks * block_size, Hkv, dh] each. Slot = block * bs + offset.
struct KvLayerView {
  TensorView k;
  TensorView v;
  int block_size = 0;
};

// What a decode step's device work depends on, for replaying it as a graph: the number of
// sequences (one new token each) and the width their block tables are padded to.
struct GraphKey {
  int batch = 0;
  int table_width = 0;
  bool operator<(const GraphKey& o) const {
    return batch != o.batch ? batch < o.batch : table_width < o.table_width;
  }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;

  // Device memory, zero-filled. Only at load time and for per-step workspaces.
  virtual absl::StatusOr<Buffer> Allocate(DType dtype, Shape shape) = 0;
  // A weight matrix [N, K] for Linear (and only Linear), filled by UploadMatrix: the backend
  // may keep it in a layout of its own (the CPU backend packs column panels). Defaults:
  // Allocate and Upload.
  virtual absl::StatusOr<Buffer> AllocateMatrix(DType dtype, Shape shape) {
    return Allocate(dtype, shape);
  }
  virtual void UploadMatrix(const float* host, TensorView dst) { Upload(host, dst); }
  // Host float32 -> device tensor (converting to the device tensor's dtype).
  virtual void Upload(const float* host, TensorView dst) = 0;
  // Device tensor -> host float32.
  virtual void Download(TensorView src, float* host) = 0;
  // Hands a float32 device tensor to `deliver` as host float32 memory, possibly later and on
  // another thread: the activation-capture path, which must not stall compute. `src` may be
  // overwritten as soon as this returns; the host view is valid only during `deliver`. Calls
  // from one backend are delivered one at a time, in order. This default downloads and
  // delivers before returning.
  virtual void CaptureAsync(TensorView src, const std::function<void(TensorView)>& deliver);
  // Blocks until every CaptureAsync so far has been delivered.
  virtual void FlushCaptures() {}

  // y[T,N] = x[T,K] · w[N,K]ᵀ (+ bias[N] when non-empty); w from AllocateMatrix.
  virtual void Linear(TensorView x, TensorView w, TensorView bias, TensorView y) = 0;
  // Rows [begin, begin + n) of a matrix from AllocateMatrix, as a matrix Linear takes: one
  // expert of a mixture whose experts are stacked by rows. begin and n are multiples of
  // kMatrixRowAlign. The default: a row-major view.
  virtual TensorView MatrixRows(TensorView w, int64_t begin, int64_t n);
  // dst[rows[i], :] += scales[i] · src[i, :] for every row i of src (rows distinct; rows and
  // scales in host memory): an expert's outputs added to its tokens' rows.
  virtual void AddRowsScaled(TensorView src, const int32_t* rows, const float* scales,
                             TensorView dst) = 0;
  // y[T,D] = table[ids[t], :]; ids in host memory, already range-checked.
  virtual void Gather(TensorView table, const int32_t* ids, TensorView y) = 0;
  // Normalises rows of x[T,D]. scale[T] = sqrt(mean(x_c²)+eps) (x_c centred for LayerNorm);
  // normalized[T,D] = x_c / scale (optional out); y = normalized·w + b (w, b optional).
  virtual void Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps,
                    TensorView y, TensorView normalized, TensorView scale) = 0;
  // Rotates the first `rotary_dim` dims of each head of x[T,heads,dh] in place (half-split
  // layout) and multiplies them by `scale` (longrope's attention factor; 1 for every other
  // rope: the cos and sin are scaled). inv_freq[rotary_dim/2]; positions in host memory.
  virtual void Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions,
                    float scale) = 0;
  // Stores k, v [T,Hkv,dh] into the pool at slots[t] (host memory).
  virtual void WriteKv(TensorView k, TensorView v, const int32_t* slots, KvLayerView kv) = 0;
  // z[T,H,dh] for every sequence; GQA maps query head h to kv head h / (H / Hkv).
  // scores = params.scale · q·k; params.window > 0 masks keys with q_pos - k_pos >= window.
  virtual void Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                         const AttentionParams& params, TensorView z) = 0;
  virtual void Activation(ActKind kind, TensorView x, TensorView y) = 0;
  // y = act(gate) * up, elementwise.
  virtual void GatedActivation(ActKind kind, TensorView gate, TensorView up, TensorView y) = 0;
  // x := x · scale, then x := cap · tanh(x / cap) when cap > 0, elementwise in place (Gemma's
  // embedding scale and logit softcap).
  virtual void ScaleAndCap(TensorView x, float scale, float cap) = 0;
  // y = a + b, elementwise (y may alias a).
  virtual void Add(TensorView a, TensorView b, TensorView y) = 0;
  // dst = src (same element count, float32).
  virtual void Copy(TensorView src, TensorView dst);
  // Runs an intervention plan on float32 `x` (engine/backend/row_ops.h); copies read
  // `source`, or x before the call when `source` is empty. The default goes through host
  // memory with ApplyRowOpsHost, the reference semantics.
  virtual void ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan);
  // After interventions on a norm's hooks: normalized[T,D] *= before[t] / after[t] (when
  // `before` is non-empty: the scale changed), then y = normalized·w + b (w, b optional).
  virtual void Renormalize(TensorView normalized, TensorView before, TensorView after,
                           TensorView w, TensorView b, TensorView y);
  // Blocks until queued work is done (no-op for synchronous backends).
  virtual void Synchronize() = 0;
  // A decode step bracketed by these may be recorded once per key and replayed (CUDA graphs):
  // Forward calls them around steps with one device, one token per sequence, no hooks and no
  // host round trips. Begin returns false when the backend does not replay steps (the step
  // then runs normally). End returns false when nothing of the step ran (capture failed);
  // the caller then runs the step again normally.
  virtual bool BeginGraphStep(const GraphKey& key) { return false; }
  virtual bool EndGraphStep() { return true; }
  // Queues dst (memory of `to`) := src (this backend's) over a direct device-to-device path
  // on this backend, and sets *ready to what `to` must wait for (WaitFor) before reading dst;
  // never blocks and never touches `to`'s queue. False when there is no direct path; callers
  // then go through host memory. Called on this backend's compute thread.
  virtual bool CopyToPeer(Backend& to, TensorView src, TensorView dst, std::shared_ptr<void>* ready) {
    return false;
  }
  // Makes this backend's later work wait for a peer's CopyToPeer (without blocking the host).
  virtual void WaitFor(const std::shared_ptr<void>& ready) {}

  // The first failure since the last call, OK if none. A backend that cannot go on with a
  // step but stays usable (device memory exhausted, no GEMM algorithm for a shape) records
  // the error, fails that Allocate, and skips every later op until the error is taken:
  // Forward then fails the step's requests and the server goes on. Failures that leave the
  // device unusable end the process instead. The CPU backend never fails.
  virtual absl::Status TakeError() { return absl::OkStatus(); }

  // The backward twins of these ops (gradient_ops.h), or null where this backend computes
  // no gradients; owned by the backend.
  virtual GradientOps* gradients() { return nullptr; }
};

inline void Backend::CaptureAsync(TensorView src, const std::function<void(TensorView)>& deliver) {
  Buffer host = Buffer::Host(DType::kF32, src.shape);
  Download(src, host.As<float>());
  deliver(host.view());
}

}  // namespace lensd

#endif  // LENSD_ENGINE_BACKEND_BACKEND_H_
