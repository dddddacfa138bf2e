// Interventions as a backend sees them: a plan of operations on selected elements of rows of
// one hook tensor, compiled per step by engine/runtime/interventions.cc and executed by
// Backend::ApplyRowOps. Plain data in host memory; the backend stages what it needs.
//
// A row is one position of one sequence (a token row of a token-major tensor, or one query
// row of an attention map). An op acts on `n` elements of its row, listed by segments
// (memory runs) in slice order; ops of one row run in plan order; different rows never share
// memory, so rows may run in parallel.
#ifndef LENSD_ENGINE_BACKEND_ROW_OPS_H_
#define LENSD_ENGINE_BACKEND_ROW_OPS_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/core/hash.h"

namespace lensd {

enum class RowOpKind {
  kZero,      // x = 0
  kScale,     // x *= a
  kSet,       // x = value
  kAdd,       // x += a · value
  kCopy,      // x = source elements (patch; also tensor-parallel write-back)
  kProject,   // per vector of `vec` elements: x += (a − x·d̂) d̂, d̂ = value[0, vec)
  kSaeClamp,  // per vector: f = act((x − b_dec)·w + a); x += (c − f)·u, see RowOp
  kNoise,     // x += N(0, a²) keyed by (seed, prompt, position, element)
};

struct RowSegment {
  int64_t offset = 0;   // first element, in elements of the tensor
  int32_t length = 0;
  int32_t element = 0;  // noise key of the first element (consecutive after it)
};

struct RowOp {
  RowOpKind kind = RowOpKind::kZero;
  int32_t row = 0;        // ops with equal rows touch the same memory: they run in order
  int32_t seg_begin = 0;  // segments [seg_begin, seg_end) of RowOpPlan::segments
  int32_t seg_end = 0;
  int32_t src_seg_begin = 0;  // kCopy: the source's segments (n elements in all)
  int32_t src_seg_end = 0;
  int32_t n = 0;              // elements (sum of the segments' lengths)
  int32_t vec = 0;            // kProject / kSaeClamp: vector length, divides n
  int64_t value = 0;          // offset into RowOpPlan::values (see kinds)
  // kScale: a = factor. kAdd: a = coeff. kProject: a = target. kNoise: a = std.
  // kSaeClamp: values = [w, u, b_dec] (3 × vec); a = encoder bias, b = threshold, c = target;
  // only_active: change only vectors whose activation f > 0.
  float a = 0, b = 0, c = 0;
  bool only_active = false;
  uint64_t seed = 0;  // kNoise
  int32_t prompt = 0, position = 0;
};

struct RowOpPlan {
  std::vector<RowOp> ops;  // grouped by row; within a row, in request order
  std::vector<RowSegment> segments;
  std::vector<float> values;
  bool empty() const { return ops.empty(); }
};

// Runs `plan` on host float32 memory `x`. kCopy reads `source` (elements addressed by its
// source segments); a null `source` means x as it was before this call (activation
// patching takes the source prompt's value before any op at the hook). The reference
// semantics every backend must reproduce.
void ApplyRowOpsHost(float* x, const float* source, const RowOpPlan& plan);

// The gradient rules of `plan` (DESIGN.md "Gradients"): `grad`, the gradient with respect to
// the tensor after the plan's ops, becomes the gradient with respect to it before them, in
// place. zero, set and copy (a patch) cut the gradient of the elements they write (a patch
// sends none to its source); scale multiplies; add and noise pass; project keeps the part
// orthogonal to its direction; an SAE clamp differentiates its activation (step slope).
// `x` is the tensor before the ops, read only when the plan clamps (may be null otherwise).
void RowOpsBackwardHost(float* grad, const float* x, const RowOpPlan& plan);
bool ReadsInput(const RowOpPlan& plan);  // RowOpsBackwardHost needs `x`

// A standard normal sample from the counter-based key (Philox-free: splitmix64 hashing and
// Box-Muller in double precision), identical on host and device up to libm rounding.
LENSD_HOST_DEVICE inline float NoiseSample(uint64_t seed, int32_t prompt, int32_t position,
                                           int64_t element) {
  uint64_t h = SplitMix64(seed);
  h = SplitMix64(h ^ static_cast<uint32_t>(prompt));
  h = SplitMix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(position)) << 20));
  h = SplitMix64(h ^ static_cast<uint64_t>(element));
  const uint64_t g = SplitMix64(h);
  const double u1 = (static_cast<double>(h >> 11) + 1.0) * (1.0 / 9007199254740992.0);  // (0,1]
  const double u2 = static_cast<double>(g >> 11) * (1.0 / 9007199254740992.0);          // [0,1)
  return static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

}  // namespace lensd

#endif  // LENSD_ENGINE_BACKEND_ROW_OPS_H_
