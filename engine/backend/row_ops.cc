#include "engine/backend/row_ops.h"

#include <algorithm>

namespace lensd {
namespace {

// The op's elements, gathered in slice order from `base` through segments [begin, end).
void Gather(const float* base, const std::vector<RowSegment>& segs, int32_t begin, int32_t end,
            float* out) {
  for (int32_t s = begin; s < end; ++s) {
    std::copy_n(base + segs[s].offset, segs[s].length, out);
    out += segs[s].length;
  }
}

void Scatter(const float* in, const std::vector<RowSegment>& segs, int32_t begin, int32_t end,
             float* base) {
  for (int32_t s = begin; s < end; ++s) {
    std::copy_n(in, segs[s].length, base + segs[s].offset);
    in += segs[s].length;
  }
}

float Dot(const float* a, const float* b, int32_t n) {
  float sum = 0;
  for (int32_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void SaeClamp(const RowOp& op, const float* params, float* x) {
  const float *w = params, *u = params + op.vec, *b_dec = params + 2 * op.vec;
  float pre = op.a;
  for (int32_t i = 0; i < op.vec; ++i) pre += (x[i] - b_dec[i]) * w[i];
  const float f = pre > op.b ? pre : 0.0f;
  if (op.only_active && f <= 0.0f) return;
  const float delta = op.c - f;
  for (int32_t i = 0; i < op.vec; ++i) x[i] += delta * u[i];
}

// One op on its gathered elements `x` [n].
void Apply(const RowOp& op, const RowOpPlan& plan, const float* copy_from, float* x) {
  const float* value = plan.values.data() + op.value;
  switch (op.kind) {
    case RowOpKind::kZero:
      std::fill_n(x, op.n, 0.0f);
      break;
    case RowOpKind::kScale:
      for (int32_t i = 0; i < op.n; ++i) x[i] *= op.a;
      break;
    case RowOpKind::kSet:
      std::copy_n(value, op.n, x);
      break;
    case RowOpKind::kAdd:
      for (int32_t i = 0; i < op.n; ++i) x[i] += op.a * value[i];
      break;
    case RowOpKind::kCopy:
      std::copy_n(copy_from, op.n, x);
      break;
    case RowOpKind::kProject:
      for (int32_t v = 0; v < op.n; v += op.vec) {
        const float shift = op.a - Dot(x + v, value, op.vec);
        for (int32_t i = 0; i < op.vec; ++i) x[v + i] += shift * value[i];
      }
      break;
    case RowOpKind::kSaeClamp:
      for (int32_t v = 0; v < op.n; v += op.vec) SaeClamp(op, value, x + v);
      break;
    case RowOpKind::kNoise: {
      int32_t i = 0;
      for (int32_t s = op.seg_begin; s < op.seg_end; ++s) {
        const RowSegment& seg = plan.segments[s];
        for (int32_t e = 0; e < seg.length; ++e, ++i) {
          x[i] += op.a * NoiseSample(op.seed, op.prompt, op.position, int64_t{seg.element} + e);
        }
      }
      break;
    }
  }
}

// One op on tensor `x` (`copy_from`: a copy's gathered source elements).
void RunOp(const RowOp& op, const RowOpPlan& plan, const float* copy_from, float* x,
           std::vector<float>& elements) {
  elements.resize(op.n);
  Gather(x, plan.segments, op.seg_begin, op.seg_end, elements.data());
  Apply(op, plan, copy_from, elements.data());
  Scatter(elements.data(), plan.segments, op.seg_begin, op.seg_end, x);
}

// The gradient rule of one op on its gathered gradient `g` [n]; `x` its gathered input
// (kSaeClamp only).
void Backward(const RowOp& op, const RowOpPlan& plan, const float* x, float* g) {
  const float* value = plan.values.data() + op.value;
  switch (op.kind) {
    case RowOpKind::kZero:
    case RowOpKind::kSet:
    case RowOpKind::kCopy:
      std::fill_n(g, op.n, 0.0f);
      break;
    case RowOpKind::kScale:
      for (int32_t i = 0; i < op.n; ++i) g[i] *= op.a;
      break;
    case RowOpKind::kAdd:
    case RowOpKind::kNoise:
      break;
    case RowOpKind::kProject:  // x' = x + (a − x·d̂) d̂: the Jacobian I − d̂d̂ᵀ is symmetric
      for (int32_t v = 0; v < op.n; v += op.vec) {
        const float along = Dot(g + v, value, op.vec);
        for (int32_t i = 0; i < op.vec; ++i) g[v + i] -= along * value[i];
      }
      break;
    case RowOpKind::kSaeClamp:  // x' = x + (c − f(pre)) u: g −= f'(pre) (g·u) w
      for (int32_t v = 0; v < op.n; v += op.vec) {
        const float *w = value, *u = value + op.vec, *b_dec = value + 2 * op.vec;
        float pre = op.a;
        for (int32_t i = 0; i < op.vec; ++i) pre += (x[v + i] - b_dec[i]) * w[i];
        if (!(pre > op.b)) continue;  // f = 0 here: slope 0 (and no change if only_active)
        const float along = Dot(g + v, u, op.vec);
        for (int32_t i = 0; i < op.vec; ++i) g[v + i] -= along * w[i];
      }
      break;
  }
}

}  // namespace

bool ReadsInput(const RowOpPlan& plan) {
  return std::any_of(plan.ops.begin(), plan.ops.end(),
                     [](const RowOp& op) { return op.kind == RowOpKind::kSaeClamp; });
}

void RowOpsBackwardHost(float* grad, const float* x, const RowOpPlan& plan) {
  // Each clamp's input: the ops before it replayed on a copy of the tensor's touched extent.
  std::vector<std::vector<float>> inputs(plan.ops.size());
  if (ReadsInput(plan)) {
    int64_t extent = 0;
    for (const RowSegment& s : plan.segments) extent = std::max(extent, s.offset + s.length);
    std::vector<float> work(x, x + extent), copied, elements;
    for (size_t i = 0; i < plan.ops.size(); ++i) {
      const RowOp& op = plan.ops[i];
      if (op.kind == RowOpKind::kSaeClamp) {
        inputs[i].resize(op.n);
        Gather(work.data(), plan.segments, op.seg_begin, op.seg_end, inputs[i].data());
      } else if (op.kind == RowOpKind::kCopy) {  // from the tensor before any op
        copied.resize(op.n);
        Gather(x, plan.segments, op.src_seg_begin, op.src_seg_end, copied.data());
      }
      RunOp(op, plan, copied.data(), work.data(), elements);
    }
  }
  std::vector<float> g;
  for (size_t i = plan.ops.size(); i-- > 0;) {
    const RowOp& op = plan.ops[i];
    g.resize(op.n);
    Gather(grad, plan.segments, op.seg_begin, op.seg_end, g.data());
    Backward(op, plan, inputs[i].data(), g.data());
    Scatter(g.data(), plan.segments, op.seg_begin, op.seg_end, grad);
  }
}

void ApplyRowOpsHost(float* x, const float* source, const RowOpPlan& plan) {
  // Copies read the pre-op tensor: gather their sources before any op runs.
  std::vector<std::vector<float>> copies(plan.ops.size());
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    const RowOp& op = plan.ops[i];
    if (op.kind != RowOpKind::kCopy) continue;
    copies[i].resize(op.n);
    Gather(source != nullptr ? source : x, plan.segments, op.src_seg_begin, op.src_seg_end,
           copies[i].data());
  }
  std::vector<float> elements;
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    RunOp(plan.ops[i], plan, copies[i].data(), x, elements);
  }
}

}  // namespace lensd
