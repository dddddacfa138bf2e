// Default implementations of the Backend operations that serve interventions: correct on any
// device by a round trip through host memory. Backends override them where that matters.
#include "engine/backend/backend.h"

#include <vector>

namespace lensd {
namespace {

std::vector<float> ToHost(Backend& b, TensorView t) {
  std::vector<float> host(static_cast<size_t>(t.NumElements()));
  if (!t.empty()) b.Download(t, host.data());
  return host;
}

}  // namespace

void Backend::Copy(TensorView src, TensorView dst) {
  Upload(ToHost(*this, src).data(), dst);
}

void Backend::ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan) {
  if (plan.empty()) return;
  std::vector<float> host = ToHost(*this, x);
  const std::vector<float> src = ToHost(*this, source);
  ApplyRowOpsHost(host.data(), source.empty() ? nullptr : src.data(), plan);
  Upload(host.data(), x);
}

void Backend::Renormalize(TensorView normalized, TensorView before, TensorView after,
                          TensorView w, TensorView b, TensorView y) {
  std::vector<float> n = ToHost(*this, normalized), y_host(n.size());
  const std::vector<float> s0 = ToHost(*this, before), s1 = ToHost(*this, after);
  const std::vector<float> wh = ToHost(*this, w), bh = ToHost(*this, b);
  const int64_t T = normalized.shape[0], D = normalized.shape[1];
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t d = 0; d < D; ++d) {
      float& v = n[t * D + d];
      if (!before.empty()) v *= s0[t] / s1[t];  // exactly v when the scale did not change
      float out = v;
      if (!w.empty()) out *= wh[d];
      if (!b.empty()) out += bh[d];
      y_host[t * D + d] = out;
    }
  }
  Upload(n.data(), normalized);
  Upload(y_host.data(), y);
}

TensorView Backend::MatrixRows(TensorView w, int64_t begin, int64_t n) {
  const int64_t k = w.shape[1];
  return {static_cast<char*>(w.data) + begin * k * static_cast<int64_t>(DTypeSize(w.dtype)),
          w.dtype,
          {n, k}};
}

}  // namespace lensd
