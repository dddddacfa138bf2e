// Decode steps as CUDA graphs, one per GraphKey. The first step of a key runs under stream
// capture; later steps replay the graph. On a replay the forward pass still runs on the host
// and calls every op, but the ops launch nothing: they only refresh the step's host inputs
// (token ids, positions, KV slots, block tables) in pinned memory, which the graph's first
// copy nodes read. For that to be valid, a graph step takes all device memory from a bump
// arena that restarts at every step (the same calls give the same addresses), passes every
// host input through the pinned mirror at a fixed offset, and defers downloads until the
// graph has run. A step whose calls differ from the captured ones (a programmer error) or
// whose capture fails is reported by End, and the caller runs it again normally.
#ifndef LENSD_ENGINE_CUDA_GRAPH_STEP_H_
#define LENSD_ENGINE_CUDA_GRAPH_STEP_H_

#include <cuda_runtime.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda/cuda_handles.h"
#include "engine/backend/backend.h"

namespace lensd::cuda {

class GraphSteps {
 public:
  enum class Mode { kOff, kCapture, kReplay };

  // `arena_bytes` of device memory and `mirror_bytes` of pinned host memory on `device`.
  static absl::StatusOr<std::unique_ptr<GraphSteps>> Create(size_t arena_bytes,
                                                            size_t mirror_bytes);
  ~GraphSteps();

  Mode mode() const { return mode_; }
  // An op failed while recording: End returns false and the step runs again normally.
  void MarkFailed(const std::string& why) { failed_ = true, failure_ = why; }
  const GraphKey& key() const { return key_; }
  // Starts a graph step on `stream`; false (mode stays kOff) for a key whose capture failed.
  bool Begin(const GraphKey& key, cudaStream_t stream);
  // Ends the step: finishes the capture, launches the graph, runs the deferred downloads.
  // False when nothing ran (see the header comment); mode is kOff afterwards either way.
  bool End(cudaStream_t stream);

  // Device memory for this step. Once the arena is exhausted the step fails (End returns
  // false) and the arena's start is returned, so recorded work still sees valid addresses.
  void* Allocate(size_t bytes);
  // The device copy of `bytes` of host input, copied by the graph from the pinned mirror.
  const void* Input(const void* host, size_t bytes, cudaStream_t stream);
  void DeferDownload(std::function<void()> download) { downloads_.push_back(std::move(download)); }

 private:
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    size_t arena_used = 0, mirror_used = 0;  // at capture: a replay must match
  };
  GraphSteps(DevicePtr arena, size_t arena_bytes, PinnedPtr mirror, size_t mirror_bytes)
      : arena_(std::move(arena)),
        arena_bytes_(arena_bytes),
        mirror_(std::move(mirror)),
        mirror_bytes_(mirror_bytes) {}
  static size_t Align(size_t n) { return (n + 255) / 256 * 256; }

  DevicePtr arena_;
  size_t arena_bytes_;
  PinnedPtr mirror_;
  size_t mirror_bytes_;
  Mode mode_ = Mode::kOff;
  GraphKey key_;
  size_t arena_used_ = 0, mirror_used_ = 0;
  bool failed_ = false;  // this step outgrew the arena or mirror, or an op failed recording
  std::string failure_;
  std::vector<std::function<void()>> downloads_;
  std::map<GraphKey, Graph> graphs_;
  std::set<GraphKey> refused_;  // keys whose capture failed
};

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_GRAPH_STEP_H_
