// Attachments: what a request hangs on a hook point besides interventions and capture — an SAE,
// later gradient taps. A hook runs as a chain: the request's interventions there, then its
// attachment there, then capture. The attachment reads the value after the interventions,
// may replace it (what flows downstream and what capture sees at the hook) and captures hooks
// of its own under the hook's name (AttachedHook, HookId::sub), so attaching one touches
// neither the block math nor the hook points.
#ifndef LENSD_ENGINE_RUNTIME_ATTACHMENTS_H_
#define LENSD_ENGINE_RUNTIME_ATTACHMENTS_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/tensor.h"
#include "engine/model/config.h"
#include "engine/runtime/hook_points.h"

namespace lensd {

struct RankContext;

class HookAttachment {
 public:
  virtual ~HookAttachment() = default;
  // The hook it sits at (CheckAttachmentSite).
  virtual HookId site() const = 0;
  // `rows` [T, width]: the step's token-major rows at the site after interventions, every
  // sequence's, at full width on every tensor-parallel rank (gathered when split; each rank
  // keeps its part of the result). `seqs`: the batch indices of the sequences that attached
  // it; only their rows may change. Runs on every rank alike; capture through EmitAttached
  // (step_hooks.h), which only rank 0 delivers.
  virtual void Run(RankContext& c, TensorView rows, const std::vector<int>& seqs) const = 0;
  // The last axis of its attached hook `h` ([1, P, width]).
  virtual int64_t Width(AttachedHook h) const = 0;
  // Whether it may change what flows downstream (then the sequence's K/V are its own).
  virtual bool ChangesStream() const { return true; }
  // Why gradients cannot pass it (OK when they can).
  virtual absl::Status CheckGradients() const {
    return absl::InvalidArgumentError("gradients through this attachment are not supported");
  }
  // The backward twin of Run: `rows` [T, width] what Run read (the site's value after its
  // interventions), `d` [T, width] the gradient of what it passed downstream, in place
  // becoming the gradient of what it read — for the rows of `seqs` only. Its attached hooks'
  // gradients go to the context's sink (EmitAttached) like Run's captures.
  virtual void Backward(RankContext& g, TensorView rows, TensorView d,
                        const std::vector<int>& seqs) const {}
};

// A request's attachments, at most one per site; shared by its sequences.
using AttachmentList = std::vector<std::shared_ptr<const HookAttachment>>;

// Whether `site` can carry an attachment: a token-major hook ([1, P, ...] with positions on
// axis 1) that interventions may edit, other than the logits. InvalidArgument naming it if not.
absl::Status CheckAttachmentSite(const ModelConfig& c, HookId site);

// Why gradients cannot pass `list`'s attachments: one at a hook outside the blocks (the
// embedding, unembed.hook_in), or one whose own CheckGradients says so. OK when they can.
absl::Status CheckAttachmentGradients(const AttachmentList& list);

// The width of attached hook `id` (id.attached()) from the attachment of `list` at its site;
// 0 when none is there.
int64_t AttachedWidth(const AttachmentList& list, HookId id);

// The sites of `list`; InvalidArgument when two share one or one is not a valid site.
absl::StatusOr<std::vector<HookId>> AttachmentSites(const ModelConfig& c,
                                                    const AttachmentList& list);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_ATTACHMENTS_H_
