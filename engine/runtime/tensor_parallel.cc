#include "engine/runtime/tensor_parallel.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace lensd {
namespace {

// Rows [begin, end) of a [rows, cols] (or 1-D) buffer; empty stays empty.
Buffer Rows(const Buffer& b, int64_t begin, int64_t end) {
  if (b.empty()) return {};
  Shape s = b.shape();
  const int64_t row = s.rank == 1 ? 1 : s[1];
  s.dims[0] = end - begin;
  Buffer out = Buffer::Host(DType::kF32, s);
  std::memcpy(out.As<float>(), b.As<float>() + begin * row, static_cast<size_t>((end - begin) * row) * 4);
  return out;
}

// Columns [begin, end) of a [rows, cols] buffer.
Buffer Cols(const Buffer& b, int64_t begin, int64_t end) {
  const int64_t rows = b.shape()[0], cols = b.shape()[1];
  Buffer out = Buffer::Host(DType::kF32, {rows, end - begin});
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.As<float>() + r * (end - begin), b.As<float>() + r * cols + begin,
                static_cast<size_t>(end - begin) * 4);
  }
  return out;
}

Buffer Copy(const Buffer& b) { return Rows(b, 0, b.empty() ? 0 : b.shape()[0]); }

}  // namespace

absl::Status CheckTensorParallel(const ModelConfig& c, int tp) {
  if (tp < 1) return absl::InvalidArgumentError("--tensor-parallel must be >= 1");
  if (c.n_heads % tp != 0 || c.d_mlp % tp != 0 ||
      (c.n_kv_heads % tp != 0 && tp % c.n_kv_heads != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tensor-parallel ", tp, " must divide the heads (", c.n_heads, ") and d_mlp (", c.d_mlp,
        "), and divide or be a multiple of the key/value heads (", c.n_kv_heads, ")"));
  }
  for (const LayerSpec& l : c.layers) {
    if (l.mlp == MlpKind::kMoe && l.moe.experts % tp != 0) {
      return absl::InvalidArgumentError(absl::StrCat("--tensor-parallel ", tp, " must divide the ",
                                                     l.moe.experts,
                                                     " experts (each rank holds whole experts)"));
    }
  }
  return absl::OkStatus();
}

int KvHeadsPerRank(const ModelConfig& c, int tp) { return std::max(1, c.n_kv_heads / tp); }
int KvReplication(const ModelConfig& c, int tp) { return std::max(1, tp / c.n_kv_heads); }

std::pair<int, int> ExpertsOfRank(const MoeParams& moe, int rank, int tp) {
  return {rank * moe.experts / tp, (rank + 1) * moe.experts / tp};
}

LayerWeights SliceLayer(const ModelConfig& c, int layer, const LayerWeights& w, int rank, int tp) {
  const int64_t dh = c.d_head;
  const bool moe = c.layers[layer].mlp == MlpKind::kMoe;
  const auto [e0, e1] = ExpertsOfRank(c.layers[layer].moe, rank, tp);
  const int64_t q0 = rank * (c.n_heads / tp) * dh, q1 = (rank + 1) * (c.n_heads / tp) * dh;
  const int64_t k0 = int64_t{rank} * c.n_kv_heads / tp * dh, k1 = k0 + KvHeadsPerRank(c, tp) * dh;
  const int64_t m0 = rank * (c.d_mlp / tp), m1 = (rank + 1) * (c.d_mlp / tp);
  LayerWeights s;
  for (const LayerTensorSpec& t : LayerTensorSpecs()) {
    const Buffer& full = w.*t.field;
    if (full.empty()) continue;
    Buffer& part = s.*t.field;
    switch (t.split) {
      case TpSplit::kReplicated:
        part = Copy(full);
        break;
      case TpSplit::kQueryRows:
        part = Rows(full, q0, q1);
        break;
      case TpSplit::kKvRows:
        part = Rows(full, k0, k1);
        break;
      case TpSplit::kQueryCols:
        part = Cols(full, q0, q1);
        break;
      case TpSplit::kMlpRows:  // experts: their gate and up rows
        part =
            moe ? Rows(full, e0 * c.layers[layer].moe.d_expert, e1 * c.layers[layer].moe.d_expert)
                : Rows(full, m0, m1);
        break;
      case TpSplit::kMlpCols:  // experts: their down projections' rows
        part = moe ? Rows(full, e0 * c.d_model, e1 * c.d_model) : Cols(full, m0, m1);
        break;
      case TpSplit::kRankZero:
        if (rank == 0) part = Copy(full);
        break;
    }
  }
  return s;
}

}  // namespace lensd
