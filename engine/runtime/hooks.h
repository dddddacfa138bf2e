// Selecting hook points (the names_filter language) and the sink through which the forward
// pass hands activations to whoever asked for them; what each point is: hook_points.h.
#ifndef LENSD_ENGINE_RUNTIME_HOOKS_H_
#define LENSD_ENGINE_RUNTIME_HOOKS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/model/config.h"
#include "engine/runtime/hook_points.h"

namespace lensd {

// Bounds on a names_filter, so that parsing one costs microseconds per pattern: a pattern is
// at most kMaxHookNameBytes long; at most kMaxHookPatterns patterns, of which at most
// kMaxHookGlobs are globs or ranges (each is matched against every hook name).
inline constexpr size_t kMaxHookNameBytes = 256;
inline constexpr size_t kMaxHookPatterns = 16384;
inline constexpr size_t kMaxHookGlobs = 64;

// The set of hooks a request selected. Patterns: exact names, globs with * and ?
// ("blocks.*.hook_resid_post"), and layer ranges in the block index ("blocks.0-3.attn.hook_z").
// A pattern that selects nothing is an error quoting (at most 100 bytes of) it and listing
// the closest valid names; so is a selection over the bounds above.
class HookSelection {
 public:
  // `sites`: the hooks where the request has attachments; their attached hooks
  // (H.hook_sae_input, ...) are selectable too.
  static absl::StatusOr<HookSelection> Parse(const ModelConfig& c,
                                             const std::vector<std::string>& patterns,
                                             const std::vector<HookId>& sites = {});
  static HookSelection All(const ModelConfig& c, const std::vector<HookId>& sites = {});
  static HookSelection None(const ModelConfig& c);
  bool Contains(HookId id) const;
  // True when some hook_attn_scores or hook_pattern is selected (they cost [H, P, P] each).
  bool HasAttentionMaps() const;
  const std::vector<HookId>& hooks() const { return hooks_; }  // forward order
  bool empty() const { return hooks_.empty(); }

 private:
  void Add(HookId id);

  std::vector<HookId> hooks_;
  std::vector<bool> bits_;  // [layer + 1][point][sub + 1]
  int n_layers_ = 0;
};

// Receives activations during a forward pass. `Wants` is asked on compute threads. `Capture`
// gets host float32 memory, valid only during the call, with the hook's TransformerLens shape
// (batch dim 1) for the sequence's tokens in this step; it may run on a device's delivery
// thread while compute goes on, but never concurrently with another Capture of the same
// Forward, and every Capture has returned when Forward returns.
class HookSink {
 public:
  virtual ~HookSink() = default;
  virtual bool Wants(int seq, HookId id) const = 0;
  // False when sequence `seq` wants no hook at all (such steps may be replayed as graphs).
  virtual bool WantsAny(int seq) const { return true; }
  virtual void Capture(int seq, HookId id, TensorView value) = 0;
  // The whole step's rows [T, ...] of a hook with interventions, on the device, before they
  // run: offered to a sink that asks (the gradient pass's LayerTape, for the rules that read
  // an op's input).
  virtual bool WantsUnedited(HookId id) const { return false; }
  virtual void CaptureUnedited(HookId id, TensorView rows) {}
  // The whole step's rows [T, ...] of a hook with attachments, after its interventions and
  // before the attachments run (what they read): for the gradient pass's LayerTape.
  virtual bool WantsBeforeAttachments(HookId id) const { return false; }
  virtual void CaptureBeforeAttachments(HookId id, TensorView rows) {}
};

// What an objective that reads a hook (hook_dot) adds to that hook's gradient in the
// backward walk: per sequence of the batch, rows [n, width] (host; empty: none).
struct HookSeed {
  HookId id{HookPoint::kResidPost, 0};
  std::vector<std::vector<float>> rows;
};

// The hook named exactly `name` (no patterns); InvalidArgument naming the closest valid
// names when this model has none such.
absl::StatusOr<HookId> HookFromName(const ModelConfig& c, std::string_view name);

// Nearest names by edit distance (for "unknown hook" errors).
std::vector<std::string> ClosestNames(std::string_view name, const std::vector<std::string>& names,
                                      size_t count);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_HOOKS_H_
