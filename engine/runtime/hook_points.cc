#include "engine/runtime/hook_points.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lensd {
namespace {

using G = HookGeometry;
using P = HookPoint;

bool LearnedPositions(const ModelConfig& c, int) { return c.learned_positions; }
bool Rotary(const ModelConfig& c, int) { return !c.learned_positions; }
bool SequentialResidual(const ModelConfig& c, int l) { return !c.layers[l].parallel_residual; }
bool GatedMlp(const ModelConfig& c, int l) { return c.layers[l].mlp == MlpKind::kGated; }
bool NotMoe(const ModelConfig& c, int l) { return c.layers[l].mlp != MlpKind::kMoe; }
bool Moe(const ModelConfig& c, int l) { return c.layers[l].mlp == MlpKind::kMoe; }

// The routing hooks' widths: every mixture-of-experts layer of a model has the same router.
MoeParams FirstMoe(const ModelConfig& c) {
  for (const LayerSpec& l : c.layers) {
    if (l.mlp == MlpKind::kMoe) return l.moe;
  }
  return {};
}
bool QkNormPerHead(const ModelConfig& c, int l) { return c.layers[l].qk_norm == QkNorm::kPerHead; }
bool QkNormWhole(const ModelConfig& c, int l) { return c.layers[l].qk_norm == QkNorm::kWhole; }
bool PreNorms(const ModelConfig& c, int l) { return HasPreNorms(c.layers[l].norms); }
bool PostNorms(const ModelConfig& c, int l) { return HasPostNorms(c.layers[l].norms); }

// In HookPoint order (checked by InfoOf).
constexpr HookPointInfo kPoints[] = {
    {P::kEmbed, "hook_embed", G::kResidual, nullptr},
    {P::kPosEmbed, "hook_pos_embed", G::kResidual, LearnedPositions},
    {P::kLnFinalScale, "ln_final.hook_scale", G::kScale, nullptr},
    {P::kLnFinalNormalized, "ln_final.hook_normalized", G::kResidual, nullptr},
    {P::kUnembedIn, "unembed.hook_in", G::kResidual, nullptr},
    {P::kUnembedOut, "unembed.hook_out", G::kLogits, nullptr},
    {P::kResidPre, "hook_resid_pre", G::kResidual, nullptr},
    {P::kLn1Scale, "ln1.hook_scale", G::kScale, PreNorms},
    {P::kLn1Normalized, "ln1.hook_normalized", G::kResidual, PreNorms},
    {P::kQ, "attn.hook_q", G::kQueryHeads, nullptr},
    {P::kK, "attn.hook_k", G::kKvHeads, nullptr},
    {P::kV, "attn.hook_v", G::kKvHeads, nullptr},
    {P::kQNormScale, "attn.q_norm.hook_scale", G::kQueryHeadsScale, QkNormPerHead},
    {P::kQNormNormalized, "attn.q_norm.hook_normalized", G::kQueryHeadsFirst, QkNormPerHead},
    {P::kQNormed, "attn.hook_q_normed", G::kQueryHeadsFirst, QkNormPerHead},
    {P::kQNormScaleWhole, "attn.q_norm.hook_scale", G::kScale, QkNormWhole},
    {P::kQNormNormalizedWhole, "attn.q_norm.hook_normalized", G::kQueryFlat, QkNormWhole},
    {P::kQNormedWhole, "attn.hook_q_normed", G::kQueryFlat, QkNormWhole},
    {P::kKNormScale, "attn.k_norm.hook_scale", G::kKvHeadsScale, QkNormPerHead},
    {P::kKNormNormalized, "attn.k_norm.hook_normalized", G::kKvHeadsFirst, QkNormPerHead},
    {P::kKNormed, "attn.hook_k_normed", G::kKvHeadsFirst, QkNormPerHead},
    {P::kKNormScaleWhole, "attn.k_norm.hook_scale", G::kScale, QkNormWhole},
    {P::kKNormNormalizedWhole, "attn.k_norm.hook_normalized", G::kKvFlat, QkNormWhole},
    {P::kKNormedWhole, "attn.hook_k_normed", G::kKvFlat, QkNormWhole},
    {P::kRotQ, "attn.hook_rot_q", G::kQueryHeads, Rotary},
    {P::kRotK, "attn.hook_rot_k", G::kKvHeads, Rotary},
    {P::kAttnScores, "attn.hook_attn_scores", G::kMap, nullptr},
    {P::kPattern, "attn.hook_pattern", G::kMap, nullptr},
    {P::kZ, "attn.hook_z", G::kQueryHeads, nullptr},
    {P::kLn1PostScale, "ln1_post.hook_scale", G::kScale, PostNorms},
    {P::kLn1PostNormalized, "ln1_post.hook_normalized", G::kResidual, PostNorms},
    {P::kAttnOut, "hook_attn_out", G::kResidual, nullptr},
    {P::kResidMid, "hook_resid_mid", G::kResidual, SequentialResidual},
    {P::kLn2Scale, "ln2.hook_scale", G::kScale, PreNorms},
    {P::kLn2Normalized, "ln2.hook_normalized", G::kResidual, PreNorms},
    {P::kMlpPre, "mlp.hook_pre", G::kMlp, NotMoe},
    {P::kMlpPreLinear, "mlp.hook_pre_linear", G::kMlp, GatedMlp},
    {P::kMlpPost, "mlp.hook_post", G::kMlp, NotMoe},
    {P::kMoeIn, "mlp.hook_pre", G::kResidual, Moe},
    {P::kExpertWeights, "mlp.hook_expert_weights", G::kExperts, Moe},
    {P::kExpertIndices, "mlp.hook_expert_indices", G::kExpertChoice, Moe},
    {P::kMoeOut, "mlp.hook_post", G::kResidual, Moe},
    {P::kLn2PostScale, "ln2_post.hook_scale", G::kScale, PostNorms},
    {P::kLn2PostNormalized, "ln2_post.hook_normalized", G::kResidual, PostNorms},
    {P::kMlpOut, "hook_mlp_out", G::kResidual, nullptr},
    {P::kResidPost, "hook_resid_post", G::kResidual, nullptr},
};
static_assert(std::size(kPoints) == kNumHookPoints, "one entry per hook point");

bool Exists(const ModelConfig& c, HookId id) {
  const HookPointInfo& info = InfoOf(id.point);
  return info.exists == nullptr || info.exists(c, id.layer);
}

}  // namespace

const HookPointInfo& InfoOf(HookPoint p) {
  const HookPointInfo& info = kPoints[static_cast<int>(p)];
  if (info.point != p) std::abort();  // the table is out of HookPoint order
  return info;
}

bool IsBlockHook(HookPoint p) {
  return static_cast<int>(p) >= static_cast<int>(HookPoint::kResidPre);
}

bool IsAttentionMap(HookPoint p) { return InfoOf(p).geometry == G::kMap; }

bool IsHeadsFirst(HookPoint p) {
  switch (InfoOf(p).geometry) {
    case G::kQueryHeadsFirst:
    case G::kKvHeadsFirst:
    case G::kQueryHeadsScale:
    case G::kKvHeadsScale:
      return true;
    default:
      return false;
  }
}

bool IsCaptureOnly(HookPoint p) {
  const G g = InfoOf(p).geometry;
  return IsHeadsFirst(p) || g == G::kQueryFlat || g == G::kKvFlat || g == G::kExperts ||
         g == G::kExpertChoice || p == P::kQNormScaleWhole || p == P::kKNormScaleWhole;
}

bool HasGradient(HookPoint p) { return !IsCaptureOnly(p); }

bool HasGradientRule(HookPoint p) {
  using P = HookPoint;
  static constexpr P kRuled[] = {P::kEmbed,     P::kPosEmbed,   P::kResidPre,     P::kAttnOut,
                                 P::kResidMid,  P::kMlpOut,     P::kResidPost,    P::kQ,
                                 P::kK,         P::kV,          P::kRotQ,         P::kRotK,
                                 P::kZ,         P::kMlpPre,     P::kMlpPreLinear, P::kMlpPost,
                                 P::kUnembedIn, P::kUnembedOut, P::kMoeIn,        P::kMoeOut};
  return std::find(std::begin(kRuled), std::end(kRuled), p) != std::end(kRuled);
}

int PositionAxis(HookPoint p) {
  const G g = InfoOf(p).geometry;
  if (g == G::kExperts || g == G::kExpertChoice) return 0;
  return IsAttentionMap(p) || IsHeadsFirst(p) ? 2 : 1;
}

int HeadsOf(const ModelConfig& c, HookPoint p) {
  switch (InfoOf(p).geometry) {
    case G::kQueryHeads:
    case G::kMap:
    case G::kQueryHeadsFirst:
    case G::kQueryHeadsScale:
      return c.n_heads;
    case G::kKvHeads:
    case G::kKvHeadsFirst:
    case G::kKvHeadsScale:
      return c.n_kv_heads;
    case G::kResidual:
    case G::kScale:
    case G::kMlp:
    case G::kLogits:
    case G::kQueryFlat:
    case G::kKvFlat:
    case G::kExperts:
    case G::kExpertChoice:
      return 0;
  }
  return 0;
}

int64_t PositionWidth(const ModelConfig& c, HookPoint p) {
  return RowWidth(c, p) * std::max(1, HeadsOf(c, p));
}

int64_t RowWidth(const ModelConfig& c, HookPoint p) {
  switch (InfoOf(p).geometry) {
    case G::kResidual:
      return c.d_model;
    case G::kScale:
    case G::kQueryHeadsScale:
    case G::kKvHeadsScale:
      return 1;
    case G::kQueryHeads:
    case G::kKvHeads:
    case G::kQueryHeadsFirst:
    case G::kKvHeadsFirst:
      return c.d_head;
    case G::kQueryFlat:
      return int64_t{c.n_heads} * c.d_head;
    case G::kKvFlat:
      return int64_t{c.n_kv_heads} * c.d_head;
    case G::kExperts:
      return FirstMoe(c).experts;
    case G::kExpertChoice:
      return FirstMoe(c).top_k;
    case G::kMap:
      return 0;
    case G::kMlp:
      return c.d_mlp;
    case G::kLogits:
      return c.vocab_size;
  }
  return 0;
}

std::string HookName(HookId id) {
  static constexpr const char* kAttachedSuffix[kNumAttachedHooks] = {
      "hook_sae_input",  "hook_sae_acts_pre", "hook_sae_acts_post",
      "hook_sae_recons", "hook_sae_error",    "hook_sae_output"};
  const char* suffix = InfoOf(id.point).suffix;
  std::string name =
      IsBlockHook(id.point) ? absl::StrCat("blocks.", id.layer, ".", suffix) : suffix;
  if (id.attached()) absl::StrAppend(&name, ".", kAttachedSuffix[id.sub]);
  return name;
}

std::vector<HookId> AllHooks(const ModelConfig& c, const std::vector<HookId>& sites) {
  std::vector<HookId> out;
  auto add = [&](HookId id) {
    out.push_back(id);
    if (std::find(sites.begin(), sites.end(), id) == sites.end()) return;
    for (int h = 0; h < kNumAttachedHooks; ++h) out.push_back(AttachedAt(id, AttachedHook(h)));
  };
  for (HookPoint p : {HookPoint::kEmbed, HookPoint::kPosEmbed}) {
    if (Exists(c, {p, -1})) add({p, -1});
  }
  for (int l = 0; l < c.n_layers; ++l) {
    for (int i = static_cast<int>(HookPoint::kResidPre); i < kNumHookPoints; ++i) {
      const HookId id{static_cast<HookPoint>(i), l};
      if (Exists(c, id)) add(id);
    }
  }
  for (HookPoint p : {HookPoint::kLnFinalScale, HookPoint::kLnFinalNormalized,
                      HookPoint::kUnembedIn, HookPoint::kUnembedOut}) {
    add({p, -1});
  }
  return out;
}

Shape HookShape(const ModelConfig& c, HookPoint point, int64_t p) {
  const int heads = HeadsOf(c, point);
  if (IsAttentionMap(point)) return {1, heads, p, p};
  if (IsHeadsFirst(point)) return {1, heads, p, RowWidth(c, point)};
  if (PositionAxis(point) == 0) return {p, RowWidth(c, point)};
  if (heads > 0) return {1, p, heads, RowWidth(c, point)};
  return {1, p, RowWidth(c, point)};
}

std::string HookShapeFormula(const ModelConfig& c, HookPoint point) {
  Shape s = HookShape(c, point, -1);
  std::vector<std::string> dims;
  for (int i = 0; i < s.rank; ++i) dims.push_back(s[i] == -1 ? "P" : absl::StrCat(s[i]));
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

}  // namespace lensd
