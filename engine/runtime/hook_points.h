// The hook points, once (the hook-point registry): for each, its TransformerLens name suffix,
// whether it is per block, its geometry — which fixes its shape, its heads, its position axis,
// how interventions address it and how tensor parallelism splits it — and when a model has
// it. Every other place (names, shapes, ListHooks, intervention validation, sweeps, the wire)
// asks this table instead of deciding again.
#ifndef LENSD_ENGINE_RUNTIME_HOOK_POINTS_H_
#define LENSD_ENGINE_RUNTIME_HOOK_POINTS_H_

#include <string>
#include <vector>

#include "engine/core/tensor.h"
#include "engine/model/config.h"

namespace lensd {

enum class HookPoint {
  // Model-level (layer = -1).
  kEmbed, kPosEmbed, kLnFinalScale, kLnFinalNormalized, kUnembedIn, kUnembedOut,
  // Per block.
  kResidPre, kLn1Scale, kLn1Normalized, kQ, kK, kV,
  // q/k RMSNorm (LayerSpec::qk_norm): per head (heads-first shapes, as TransformerLens) or over
  // the whole projection (token-major); one name, two points, a model has one kind.
  kQNormScale, kQNormNormalized, kQNormed, kQNormScaleWhole, kQNormNormalizedWhole,
  kQNormedWhole, kKNormScale, kKNormNormalized, kKNormed, kKNormScaleWhole,
  kKNormNormalizedWhole, kKNormedWhole,
  kRotQ, kRotK, kAttnScores, kPattern, kZ,
  kLn1PostScale, kLn1PostNormalized, kAttnOut, kResidMid, kLn2Scale, kLn2Normalized, kMlpPre,
  kMlpPreLinear, kMlpPost,
  // Mixture-of-experts layers (TransformerLens's names): the block's input and output, the
  // routing weights scattered over the experts [P, E] and the chosen experts [P, k].
  kMoeIn, kExpertWeights, kExpertIndices, kMoeOut,
  kLn2PostScale, kLn2PostNormalized, kMlpOut, kResidPost,
};
inline constexpr int kNumHookPoints = static_cast<int>(HookPoint::kResidPost) + 1;

// The hooks an attachment adds under its site's name (engine/runtime/attachments.h), with
// SAELens's names: an SAE attached at H has H.hook_sae_input, ..., H.hook_sae_output. Each is
// [1, P, width] (width: the site's, or the attachment's own for the feature activations).
enum class AttachedHook { kSaeInput, kSaeActsPre, kSaeActsPost, kSaeRecons, kSaeError, kSaeOutput };
inline constexpr int kNumAttachedHooks = static_cast<int>(AttachedHook::kSaeOutput) + 1;

struct HookId {
  HookPoint point;
  int layer;     // -1 for model-level points
  int sub = -1;  // -1: the point itself; else the AttachedHook of the attachment at the point
  bool operator==(const HookId& o) const {
    return point == o.point && layer == o.layer && sub == o.sub;
  }
  bool attached() const { return sub >= 0; }
};

inline HookId AttachedAt(HookId site, AttachedHook h) {
  return {site.point, site.layer, static_cast<int>(h)};
}

// An SAE's feature activations, H.hook_sae_acts_post (what feature edits and sparse
// streaming act on).
inline bool IsFeatureHook(HookId id) {
  return id.sub == static_cast<int>(AttachedHook::kSaeActsPost);
}

// What a hook's tensor is; TransformerLens shapes with batch dim 1 and P positions.
enum class HookGeometry {
  kResidual,    // [1, P, D]
  kScale,       // [1, P, 1]: a norm's scale
  kQueryHeads,  // [1, P, H, dh]; split by head under tensor parallelism
  kKvHeads,     // [1, P, Hkv, dh]; split by key/value head
  kMap,         // [1, H, P, P]: attention scores and pattern, positions on axis 2
  kMlp,         // [1, P, M]; split by feature
  kLogits,      // [1, P, V]
  // Capture only (interventions refuse them):
  kQueryHeadsFirst,  // [1, H, P, dh]: per-head q norm values, positions on axis 2
  kKvHeadsFirst,     // [1, Hkv, P, dh]
  kQueryHeadsScale,  // [1, H, P, 1]: per-head q norm scale
  kKvHeadsScale,     // [1, Hkv, P, 1]
  kQueryFlat,        // [1, P, H·dh]: whole-projection q norm values
  kKvFlat,           // [1, P, Hkv·dh]
  kExperts,          // [P, E]: no batch axis, positions on axis 0 (as TransformerLens)
  kExpertChoice,     // [P, k]
};

struct HookPointInfo {
  HookPoint point;
  const char* suffix;  // "hook_embed", "attn.hook_z", ...: blocks.L.<suffix> per block
  HookGeometry geometry;
  // Whether layer `layer` (-1 for model-level points) of `c` has it; nullptr: always.
  bool (*exists)(const ModelConfig& c, int layer);
};

const HookPointInfo& InfoOf(HookPoint p);

bool IsBlockHook(HookPoint p);
bool IsAttentionMap(HookPoint p);  // kMap geometry
// Heads before positions ([1, heads, P, w]) without being a map: the per-head q/k norm hooks.
bool IsHeadsFirst(HookPoint p);
// Hooks that can be captured but not intervened on (the q/k norm internals).
bool IsCaptureOnly(HookPoint p);
// Whether the backward pass gives it a gradient (N_grad): every hook interventions can edit.
bool HasGradient(HookPoint p);
// Whether interventions there pass gradients by their rules (DESIGN.md "Gradients"): the
// token hooks of the residual stream, attention heads, MLPs and head; not norm statistics,
// q/k norms, attention maps or expert routing.
bool HasGradientRule(HookPoint p);
// The position axis of its TransformerLens shape: 2 for maps and heads-first hooks, 0 for the
// routing hooks (no batch axis), else 1.
int PositionAxis(HookPoint p);
// Its heads (query heads for maps, key/value heads for k, v, rot_k); 0 when not per head.
int HeadsOf(const ModelConfig& c, HookPoint p);
// The size of its last axis for one position (and head): D, 1, dh, M or V; 0 for maps.
int64_t RowWidth(const ModelConfig& c, HookPoint p);
// Its elements per position over every head (RowWidth × heads): the width of a token-major
// hook's rows, what an SAE or a hook_dot direction at it spans.
int64_t PositionWidth(const ModelConfig& c, HookPoint p);

// "blocks.L.<suffix>" or the model-level suffix; an attached hook's adds ".<its suffix>".
std::string HookName(HookId id);
// Every hook the architecture has, in forward order; with attachments at `sites`, each site's
// attached hooks follow it.
std::vector<HookId> AllHooks(const ModelConfig& c, const std::vector<HookId>& sites = {});
// TransformerLens shape with batch dim 1 for a prompt of `p` tokens.
Shape HookShape(const ModelConfig& c, HookPoint point, int64_t p);
// Shape formula for documentation/API, e.g. "[1, P, 4, 16]".
std::string HookShapeFormula(const ModelConfig& c, HookPoint point);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_HOOK_POINTS_H_
