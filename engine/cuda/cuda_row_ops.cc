// CudaBackend: intervention row ops (engine/backend/row_ops.h) on the device.
#include <algorithm>
#include <vector>

#include "engine/cuda/cuda_backend_impl.h"
#include "engine/cuda/kernels/launchers.h"

namespace lensd {

void CudaBackend::ApplyRowOps(TensorView x, TensorView source, const RowOpPlan& plan) {
  if (!Use() || plan.empty()) return;
  std::vector<int> row_begin;
  std::vector<int64_t> scratch_at;
  int64_t total = 0;
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    if (i == 0 || plan.ops[i].row != plan.ops[i - 1].row) row_begin.push_back(static_cast<int>(i));
    scratch_at.push_back(total);
    total += plan.ops[i].n;
  }
  const int rows = static_cast<int>(row_begin.size());
  row_begin.push_back(static_cast<int>(plan.ops.size()));
  absl::StatusOr<Buffer> scratch = Allocate(DType::kF32, {std::max<int64_t>(total, 1)});
  if (!scratch.ok()) return;  // recorded (TakeError)
  const RowOp* ops = Stage(6, plan.ops.data(), plan.ops.size());
  const int* begin = Stage(7, row_begin.data(), row_begin.size());
  const RowSegment* segs = Stage(8, plan.segments.data(), plan.segments.size());
  const float* values = Stage(9, plan.values.data(), plan.values.size());
  const int64_t* at = Stage(10, scratch_at.data(), scratch_at.size());
  if (Skip()) return;
  CheckCuda(cuda::LaunchRowOps(ops, static_cast<int>(plan.ops.size()), begin, rows, segs, values,
                               at, F(scratch->view()), source.empty() ? F(x) : F(source), F(x),
                               stream_.get()),
            "ApplyRowOps");
}

}  // namespace lensd
