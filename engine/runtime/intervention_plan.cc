// Compiling a request's interventions into the row ops of one hook in one forward step.
#include <cstdlib>
#include <unordered_map>

#include "engine/runtime/interventions.h"
#include "engine/runtime/interventions_internal.h"

namespace lensd {
namespace {

using Prepared = InterventionSet::Prepared;

RowOp BaseOp(const Intervention& iv, const Prepared& p, int prompt, int pos) {
  RowOp op;
  op.vec = p.vec;
  switch (iv.op) {
    case InterventionOp::kZero: op.kind = RowOpKind::kZero; break;
    case InterventionOp::kScale: op.kind = RowOpKind::kScale, op.a = iv.factor; break;
    case InterventionOp::kSet: op.kind = RowOpKind::kSet; break;
    case InterventionOp::kAdd: op.kind = RowOpKind::kAdd, op.a = iv.coeff; break;
    case InterventionOp::kPatch: op.kind = RowOpKind::kCopy; break;
    case InterventionOp::kProject: op.kind = RowOpKind::kProject, op.a = iv.target; break;
    case InterventionOp::kSaeClamp:
      op.kind = RowOpKind::kSaeClamp;
      op.a = iv.encoder_bias, op.b = iv.threshold, op.c = iv.target;
      op.only_active = iv.only_active;
      break;
    case InterventionOp::kNoise:
      op.kind = RowOpKind::kNoise, op.a = iv.std, op.seed = iv.seed;
      op.prompt = prompt, op.position = pos;
      break;
  }
  return op;
}

// Appends one element, extending the last segment when it continues it.
void AddElement(RowOpPlan& plan, int64_t offset, int32_t element) {
  if (!plan.segments.empty()) {
    RowSegment& last = plan.segments.back();
    if (last.offset + last.length == offset && last.element + last.length == element) {
      ++last.length;
      return;
    }
  }
  plan.segments.push_back({offset, 1, element});
}

// The index of the sequence holding prompt `prompt` of the same request.
int SourceSeq(const std::vector<PlanSeq>& seqs, const InterventionSet* set, int prompt) {
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].set == set && seqs[s].prompt == prompt) return static_cast<int>(s);
  }
  // The scheduler runs the prompts of a patching request in one step: a programmer bug.
  std::abort();
}

std::vector<int> Heads(const Intervention& iv, const Geometry& g) {
  if (!iv.heads.empty()) return iv.heads;
  std::vector<int> all(static_cast<size_t>(g.a));
  for (int h = 0; h < g.a; ++h) all[h] = h;
  return all;
}

// Per intervention, where its project/sae_clamp parameters sit in the plan's values.
class ParamTable {
 public:
  int64_t At(RowOpPlan& plan, const Prepared& p) {
    auto [it, added] = offsets_.try_emplace(&p, static_cast<int64_t>(plan.values.size()));
    if (added) plan.values.insert(plan.values.end(), p.params.begin(), p.params.end());
    return it->second;
  }

 private:
  std::unordered_map<const Prepared*, int64_t> offsets_;
};

// Emits the op at one position: `element(ai, bi)` gives (offset, noise element) of the
// slice element at head index ai, element index bi (offset < 0: absent in this step), and
// `source(ai, bi)` the source's offset for patches.
template <typename Element, typename Source>
void AddOp(RowOpPlan& plan, ParamTable& params, RowOp op, const Intervention& iv,
           const Prepared& p, int j, int heads, int elements, Element element, Source source) {
  const float* value = iv.value.data.data();
  op.seg_begin = static_cast<int32_t>(plan.segments.size());
  const int64_t value_at = static_cast<int64_t>(plan.values.size());
  for (int ai = 0; ai < heads; ++ai) {
    for (int bi = 0; bi < elements; ++bi) {
      const auto [offset, key] = element(ai, bi);
      if (offset < 0) continue;
      AddElement(plan, offset, key);
      ++op.n;
      if (op.kind == RowOpKind::kSet || op.kind == RowOpKind::kAdd) {
        plan.values.push_back(value[j * p.stride[0] + ai * p.stride[1] + bi * p.stride[2]]);
      }
    }
  }
  op.seg_end = static_cast<int32_t>(plan.segments.size());
  if (op.n == 0) return;
  op.value = value_at;
  if (op.vec > 0) op.value = params.At(plan, p);
  if (op.kind == RowOpKind::kCopy) {
    op.src_seg_begin = static_cast<int32_t>(plan.segments.size());
    int32_t k = 0;  // consecutive keys, so that runs of the source merge too
    for (int ai = 0; ai < heads; ++ai) {
      for (int bi = 0; bi < elements; ++bi) {
        if (element(ai, bi).first >= 0) AddElement(plan, source(ai, bi), k++);
      }
    }
    op.src_seg_end = static_cast<int32_t>(plan.segments.size());
  }
  plan.ops.push_back(op);
}

}  // namespace

RowOpPlan InterventionSet::PlanTokenHook(const ModelConfig& c, HookId id,
                                         const std::vector<PlanSeq>& seqs) {
  RowOpPlan plan;
  ParamTable params;
  const Geometry g = GeometryOf(c, id.point);
  const int64_t width = g.a * g.b;
  for (const PlanSeq& seq : seqs) {
    if (seq.set == nullptr || !seq.set->Touches(id)) continue;
    for (int t = 0; t < seq.n; ++t) {
      const int pos = seq.start_pos + t, row = seq.q_begin + t;
      seq.set->ForEachAt(seq.prompt, id, pos, [&](const Intervention& iv, const Prepared& p,
                                                  const Prepared::PerPrompt& pp, int j) {
        const std::vector<int> heads = Heads(iv, g);
        int64_t source_row = 0;
        if (iv.op == InterventionOp::kPatch) {
          const PlanSeq& src = seqs[SourceSeq(seqs, seq.set, iv.source)];
          source_row = src.q_begin + pp.source.PositionAt(j) - src.start_pos;
        }
        RowOp op = BaseOp(iv, p, seq.prompt, pos);
        op.row = row;
        auto element = [&](int ai, int bi) {
          const int64_t at = heads[ai] * g.b + bi;
          return std::pair<int64_t, int32_t>{row * width + at, static_cast<int32_t>(at)};
        };
        auto source = [&](int ai, int bi) { return source_row * width + heads[ai] * g.b + bi; };
        AddOp(plan, params, op, iv, p, j, static_cast<int>(heads.size()), static_cast<int>(g.b),
              element, source);
      });
    }
  }
  return plan;
}

RowOpPlan InterventionSet::PlanAttentionMaps(const ModelConfig& c, HookId id,
                                             const std::vector<PlanSeq>& seqs,
                                             const std::vector<int64_t>& offsets) {
  RowOpPlan plan;
  ParamTable params;
  const Geometry g = GeometryOf(c, id.point);
  int32_t rows = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const PlanSeq& seq = seqs[s];
    const int64_t n_q = seq.n, n_k = seq.start_pos + seq.n;
    for (int t = 0; t < seq.n; ++t, ++rows) {
      if (seq.set == nullptr || offsets[s] < 0 || !seq.set->Touches(id)) continue;
      const int pos = seq.start_pos + t;
      seq.set->ForEachAt(seq.prompt, id, pos, [&](const Intervention& iv, const Prepared& p,
                                                  const Prepared::PerPrompt& pp, int j) {
        const std::vector<int> heads = Heads(iv, g);
        int64_t src_base = 0, src_q = 0, src_k = 0;
        if (iv.op == InterventionOp::kPatch) {
          const int s2 = SourceSeq(seqs, seq.set, iv.source);
          src_q = seqs[s2].n, src_k = seqs[s2].start_pos + seqs[s2].n;
          src_base = offsets[s2] + (pp.source.PositionAt(j) - seqs[s2].start_pos) * src_k;
        }
        const int keys = pp.keys.Count() >= 0 ? pp.keys.Count() : static_cast<int>(n_k);
        RowOp op = BaseOp(iv, p, seq.prompt, pos);
        op.row = rows;
        auto element = [&](int ai, int bi) {
          const int64_t key = pp.keys.PositionAt(bi);
          if (key >= n_k) return std::pair<int64_t, int32_t>{-1, 0};
          const int64_t at = offsets[s] + (heads[ai] * n_q + t) * n_k + key;
          return std::pair<int64_t, int32_t>{at, static_cast<int32_t>(heads[ai] * c.max_positions + key)};
        };
        auto source = [&](int ai, int bi) {
          return src_base + heads[ai] * src_q * src_k + pp.source_keys.PositionAt(bi);
        };
        AddOp(plan, params, op, iv, p, j, static_cast<int>(heads.size()), keys, element, source);
      });
    }
  }
  return plan;
}

}  // namespace lensd
