#include "engine/runtime/step_context.h"

#include <algorithm>

namespace lensd {

StepPlan BuildStepPlan(const std::vector<SeqInput>& batch, HookSink* hooks, int block_size) {
  StepPlan plan;
  plan.batch = &batch;
  plan.hooks = hooks;
  const int bs = block_size;
  for (const SeqInput& in : batch) {
    plan.plan_seqs.push_back({plan.tokens, static_cast<int>(in.tokens.size()), in.start_pos,
                              in.interventions, in.prompt_index});
    plan.any_interventions |= in.interventions != nullptr;
    plan.any_attachments |= in.attachments != nullptr && !in.attachments->empty();
    plan.q_begin.push_back(plan.tokens);
    for (size_t i = 0; i < in.tokens.size(); ++i) {
      const int pos = in.start_pos + static_cast<int>(i);
      plan.ids.push_back(in.tokens[i]);
      plan.positions.push_back(pos);
      plan.slots.push_back((*in.block_table)[pos / bs] * bs + pos % bs);
    }
    plan.tokens += static_cast<int>(in.tokens.size());
  }
  return plan;
}

bool StepPlan::Intervened(HookId id) const {
  if (!any_interventions) return false;
  for (const PlanSeq& s : plan_seqs) {
    if (s.set != nullptr && s.set->Touches(id)) return true;
  }
  return false;
}

std::vector<StepPlan::Attached> StepPlan::AttachedAt(HookId site) const {
  std::vector<Attached> out;
  if (!any_attachments) return out;
  for (size_t s = 0; s < batch->size(); ++s) {
    const AttachmentList* list = (*batch)[s].attachments;
    if (list == nullptr) continue;
    for (const auto& a : *list) {
      if (!(a->site() == site)) continue;
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const Attached& g) { return g.attachment == a.get(); });
      if (it == out.end()) it = out.insert(out.end(), {a.get(), {}});
      it->seqs.push_back(static_cast<int>(s));
    }
  }
  return out;
}

bool StepPlan::Wants(HookId id) const {
  if (hooks == nullptr) return false;
  for (size_t s = 0; s < q_begin.size(); ++s) {
    if (hooks->Wants(static_cast<int>(s), id)) return true;
  }
  return false;
}

}  // namespace lensd
