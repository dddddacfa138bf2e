#include "engine/runtime/attachments.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace lensd {

absl::Status CheckAttachmentSite(const ModelConfig& c, HookId site) {
  const std::vector<HookId> all = AllHooks(c);
  const HookGeometry g = InfoOf(site.point).geometry;
  const bool token_major = g == HookGeometry::kResidual || g == HookGeometry::kQueryHeads ||
                           g == HookGeometry::kKvHeads || g == HookGeometry::kMlp;
  // A norm's normalized value is computed only when asked for and feeds the norm's output
  // through its own path: not a place to splice.
  const bool norm_internal =
      site.point == HookPoint::kLn1Normalized || site.point == HookPoint::kLn2Normalized ||
      site.point == HookPoint::kLn1PostNormalized || site.point == HookPoint::kLn2PostNormalized ||
      site.point == HookPoint::kLnFinalNormalized;
  if (site.attached() || std::find(all.begin(), all.end(), site) == all.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("this model (", c.model_type, ") has no hook ", HookName(site)));
  }
  if (!token_major || norm_internal || IsCaptureOnly(site.point)) {
    return absl::InvalidArgumentError(
        absl::StrCat("nothing can be attached at ", HookName(site),
                     ": attach at a residual, attention head (q, k, v, z) or MLP hook"));
  }
  return absl::OkStatus();
}

absl::Status CheckAttachmentGradients(const AttachmentList& list) {
  for (const auto& a : list) {
    if (a->site().layer < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradients through an attachment at ", HookName(a->site()),
                       " are not supported: attach at a hook inside the blocks"));
    }
    absl::Status ok = a->CheckGradients();
    if (!ok.ok()) return ok;
  }
  return absl::OkStatus();
}

int64_t AttachedWidth(const AttachmentList& list, HookId id) {
  const HookId site{id.point, id.layer};
  for (const auto& a : list) {
    if (a->site() == site) return a->Width(static_cast<AttachedHook>(id.sub));
  }
  return 0;
}

absl::StatusOr<std::vector<HookId>> AttachmentSites(const ModelConfig& c,
                                                    const AttachmentList& list) {
  std::vector<HookId> sites;
  for (const auto& a : list) {
    const HookId site = a->site();
    absl::Status ok = CheckAttachmentSite(c, site);
    if (!ok.ok()) return ok;
    if (std::find(sites.begin(), sites.end(), site) != sites.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("two attachments at ", HookName(site), "; at most one per hook"));
    }
    sites.push_back(site);
  }
  return sites;
}

}  // namespace lensd
