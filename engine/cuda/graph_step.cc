#include "engine/cuda/graph_step.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "engine/core/status.h"

namespace lensd::cuda {

absl::StatusOr<std::unique_ptr<GraphSteps>> GraphSteps::Create(size_t arena_bytes,
                                                               size_t mirror_bytes) {
  ASSIGN_OR_RETURN(DevicePtr arena, DeviceAlloc(arena_bytes));
  ASSIGN_OR_RETURN(PinnedPtr mirror, PinnedAlloc(mirror_bytes));
  return std::unique_ptr<GraphSteps>(
      new GraphSteps(std::move(arena), arena_bytes, std::move(mirror), mirror_bytes));
}

GraphSteps::~GraphSteps() {
  for (auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph.exec);
}

bool GraphSteps::Begin(const GraphKey& key, cudaStream_t stream) {
  if (refused_.count(key)) return false;
  key_ = key;
  arena_used_ = mirror_used_ = 0;
  failed_ = false;
  failure_.clear();
  downloads_.clear();
  if (graphs_.count(key)) {
    mode_ = Mode::kReplay;
    return true;
  }
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    refused_.insert(key);
    return false;
  }
  mode_ = Mode::kCapture;
  return true;
}

bool GraphSteps::End(cudaStream_t stream) {
  const Mode mode = mode_;
  mode_ = Mode::kOff;
  if (mode == Mode::kCapture) {
    cudaGraph_t graph = nullptr;
    const cudaError_t captured = cudaStreamEndCapture(stream, &graph);
    cudaGraphExec_t exec = nullptr;
    const bool ok =
        !failed_ && captured == cudaSuccess && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!ok) {
      cudaGetLastError();
      spdlog::warn("decode steps of batch {} run without a CUDA graph (capture failed: {})",
                   key_.batch, !failure_.empty() ? failure_ : failed_ ? "arena too small"
                                                                      : cudaGetErrorString(captured));
      refused_.insert(key_);
      return false;
    }
    graphs_[key_] = {exec, arena_used_, mirror_used_};
  }
  const Graph& g = graphs_.at(key_);
  if (failed_ || g.arena_used != arena_used_ || g.mirror_used != mirror_used_) {
    spdlog::error("a replayed decode step differs from its captured graph; dropping the graph");
    cudaGraphExecDestroy(g.exec);
    graphs_.erase(key_);
    refused_.insert(key_);
    return false;
  }
  CheckCuda(cudaGraphLaunch(g.exec, stream), "cudaGraphLaunch");
  for (auto& download : downloads_) download();            // each synchronises the stream
  CheckCuda(cudaStreamSynchronize(stream), "graph step");  // the mirror may be rewritten next
  downloads_.clear();
  return true;
}

void* GraphSteps::Allocate(size_t bytes) {
  const size_t size = Align(bytes ? bytes : 1);
  if (arena_used_ + size > arena_bytes_) {
    failed_ = true;  // the step will not run; recorded ops still get valid addresses
    return arena_.get();
  }
  void* p = static_cast<char*>(arena_.get()) + arena_used_;
  arena_used_ += size;
  return p;
}

const void* GraphSteps::Input(const void* host, size_t bytes, cudaStream_t stream) {
  void* device = Allocate(bytes);
  const size_t size = Align(bytes ? bytes : 1);
  if (failed_ || mirror_used_ + size > mirror_bytes_) {
    failed_ = true;
    return device;
  }
  char* pinned = static_cast<char*>(mirror_.get()) + mirror_used_;
  mirror_used_ += size;
  std::memcpy(pinned, host, bytes);
  if (mode_ == Mode::kCapture && bytes > 0) {  // becomes the graph's copy node
    const cudaError_t err = cudaMemcpyAsync(device, pinned, bytes, cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) {  // e.g. cudaErrorStreamCaptureInvalidated: only the recording fails
      cudaGetLastError();
      MarkFailed(std::string("graph input: ") + cudaGetErrorString(err));
    }
  }
  return device;
}

}  // namespace lensd::cuda
