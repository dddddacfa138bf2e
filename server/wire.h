// Tensors as a RunWithCache client receives them: an optional slice of the position axis and
// the requested element type. Shared by the server (producing) and lensctl (assembling).
#ifndef LENSD_SERVER_WIRE_H_
#define LENSD_SERVER_WIRE_H_

#include <cstdint>
#include <optional>
#include <utility>

#include "engine/core/tensor.h"
#include "engine/model/config.h"
#include "engine/runtime/attachments.h"
#include "engine/runtime/hooks.h"

namespace lensd {

inline constexpr size_t kMaxChunkBytes = size_t{1} << 20;

// Python-style [start, stop) with negative indices counting from the end, clamped.
struct PositionSlice {
  std::optional<int64_t> start, stop;
  std::pair<int64_t, int64_t> Resolve(int64_t n) const;
  bool IsFull() const { return !start && !stop; }
};

// Shape of a hook for a prompt of `p` tokens after slicing positions; an attached hook's
// width comes from its attachment in `attached`.
Shape WireShape(const ModelConfig& c, HookId id, int64_t p, const PositionSlice& slice,
                const AttachmentList& attached = {});

// Per position in [range) of `src` [1, P, n] (host, float32): its k largest elements,
// descending (ties to the lower index), as indices (int32 [1, m, k]) and values ([1, m, k] in
// `dtype`).
std::pair<Buffer, Buffer> TopFeatures(TensorView src, std::pair<int64_t, int64_t> range, int k,
                                      DType dtype);

// Rows [range) of `axis` of `src` (host, float32), converted to `dtype`.
Buffer SliceAndConvert(TensorView src, int axis, std::pair<int64_t, int64_t> range, DType dtype);

}  // namespace lensd

#endif  // LENSD_SERVER_WIRE_H_
