// Interventions (DESIGN.md, "Interventions"): typed operations on hook values — ablation,
// activation patching, steering, SAE-feature clamping, noise. A request's list is validated
// once against the model and its prompts (InterventionSet::Create, errors name
// "interventions[i].<field>"), then compiled per forward step into RowOpPlans for the hooks
// it touches; the forward pass only hands each hook's tensor to Backend::ApplyRowOps.
//
// Slices: at hook `blocks.L.attn.hook_z` ([1, P, H, dh]) an intervention selecting positions
// and heads acts on the slice [1, n_pos, n_heads, dh]; at attention maps ([1, H, Pq, Pk]) on
// [1, n_heads, n_pos, n_keys]. Values broadcast to the slice numpy-style; an axis whose
// length is unknown when the request arrives (Generate's generated positions, its keys) takes
// only length-1 values.
#ifndef LENSD_ENGINE_RUNTIME_INTERVENTIONS_H_
#define LENSD_ENGINE_RUNTIME_INTERVENTIONS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/runtime/hooks.h"
#include "engine/backend/row_ops.h"

namespace lensd {

enum class InterventionOp { kZero, kScale, kSet, kAdd, kPatch, kProject, kSaeClamp, kNoise };
inline constexpr int kNumInterventionOps = static_cast<int>(InterventionOp::kNoise) + 1;
const char* OpName(InterventionOp op);  // "zero", "scale", ..., as in DESIGN.md

// Positions (or attention-map keys) an intervention selects.
struct PositionSelector {
  enum class Kind {
    kAll,        // RunWithCache: every prompt position; Generate: every position, new ones too
    kPrompt,     // the prompt's positions
    kGenerated,  // Generate: every generated token
    kIndices,    // `indices` in order; negative ones count from the prompt's end
    kSlice,      // Python slice [start, stop) over the prompt's positions
  };
  Kind kind = Kind::kAll;
  std::vector<int> indices;
  std::optional<int> start, stop;
};

struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct Intervention {
  // How errors name it, e.g. "interventions[2] (at blocks.0.attn.hook_z)" for one of the hooks a
  // request's pattern reached; empty: "interventions[i]", i its index in the list. Not part of
  // its meaning (fingerprints leave it out).
  std::string name;
  HookId hook{HookPoint::kEmbed, -1};
  std::vector<int> prompts;  // RunWithCache prompt indices; empty: every prompt
  PositionSelector positions;
  std::vector<int> heads;  // per-head hooks and attention maps; empty: every head
  PositionSelector keys;   // attention maps only: key positions
  InterventionOp op = InterventionOp::kZero;
  float factor = 1;        // scale
  float coeff = 1;         // add
  float target = 0;        // project (c), sae_clamp (t)
  float encoder_bias = 0;  // sae_clamp (b)
  float threshold = 0;     // sae_clamp (θ)
  bool only_active = false;
  float std = 0;           // noise
  uint64_t seed = 0;       // noise
  int source = -1;         // patch: prompt index
  std::optional<PositionSelector> source_positions;  // patch; default: `positions`
  FloatTensor value;  // set/add value, project direction, sae_clamp encoder
  FloatTensor decoder, decoder_bias;  // sae_clamp
};

// A selector resolved against one prompt: explicit positions, or the range [lo, hi).
struct Selection {
  static constexpr int kOpen = INT32_MAX;  // hi of an open-ended range
  bool listed = false;
  std::vector<int> list;
  int lo = 0, hi = 0;
  int Count() const;             // -1 when open-ended
  int IndexOf(int pos) const;    // index among the selected, or -1
  int PositionAt(int j) const;
};

// `s` against a prompt of `len` tokens whose sequence's positions end before `limit`;
// INVALID_ARGUMENT naming `field` (and `prompt`, e.g. "prompts[1] (5 tokens)") otherwise.
absl::StatusOr<Selection> ResolvePositions(const PositionSelector& s, int len, int limit,
                                           bool generate, const std::string& field,
                                           const std::string& prompt);

// One sequence of a forward step as the planner sees it: its rows [q_begin, q_begin + n) of
// the step's tensors hold positions [start_pos, start_pos + n).
class InterventionSet;
struct PlanSeq {
  int q_begin = 0, n = 0, start_pos = 0;
  const InterventionSet* set = nullptr;  // null: no interventions
  int prompt = 0;                        // the sequence's prompt index in its request
};

// A request's validated interventions. Immutable and shared by the request's sequences.
class InterventionSet {
 public:
  // `prompt_lengths`: every prompt of the request (Generate: one). `max_tokens`: the most
  // positions a sequence may reach (prompt + new tokens; the prompt length for RunWithCache).
  // Values must be finite; directions are normalised here.
  static absl::StatusOr<std::shared_ptr<const InterventionSet>> Create(
      const ModelConfig& c, std::vector<Intervention> list, const std::vector<int>& prompt_lengths,
      bool generate, int max_tokens);

  const std::vector<Intervention>& list() const { return list_; }
  bool Touches(HookId id) const;
  bool HasPatch() const { return has_patch_; }
  // The first position of prompt `prompt` any op touches (query positions for attention
  // maps): what comes before is computed as for plain traffic.
  int FirstPosition(int prompt) const;
  // A hash of every field of every intervention and of `prompt`: the prefix-cache key of
  // that prompt's blocks from FirstPosition on (equal for equal requests).
  uint64_t Fingerprint(int prompt) const;
  // OK when a gradient can pass every intervention (HasGradientRule; no SAE clamp on the
  // logits); else INVALID_ARGUMENT naming the first that cannot.
  absl::Status CheckGradientRules() const;
  // Counts per op kind (for metrics and logs).
  std::array<int, kNumInterventionOps> OpCounts() const;

  // Row ops of hook `id` over a step's token-major tensor [T, ...] (rows as in `seqs`; the
  // full tensor, gathered across tensor-parallel ranks).
  static RowOpPlan PlanTokenHook(const ModelConfig& c, HookId id, const std::vector<PlanSeq>& seqs);
  // Row ops of an attention-map hook over one buffer holding every sequence's [H, n_q, n_k]
  // map, sequence s's at element `offsets[s]` (-1: not in the buffer).
  static RowOpPlan PlanAttentionMaps(const ModelConfig& c, HookId id,
                                     const std::vector<PlanSeq>& seqs,
                                     const std::vector<int64_t>& offsets);

  struct Prepared;  // internal: interventions_internal.h

 private:
  // fn(intervention, prepared, per-prompt part, index of `pos` in its positions) for every
  // intervention of prompt `prompt` at hook `id` that selects position `pos`, in order.
  template <typename Fn>
  void ForEachAt(int prompt, HookId id, int pos, Fn&& fn) const;
  InterventionSet() = default;
  std::vector<Intervention> list_;
  std::vector<std::shared_ptr<const Prepared>> prepared_;  // per intervention
  std::vector<bool> touched_;                              // [(layer + 1) * kNumHookPoints + point]
  std::vector<std::vector<int>> by_prompt_;  // per prompt, the interventions applying to it
  bool has_patch_ = false;
  int n_layers_ = 0;
  uint64_t fingerprint_ = 0;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_INTERVENTIONS_H_
