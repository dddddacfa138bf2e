// Intervention row ops (engine/backend/row_ops.h) on the device, mirroring ApplyRowOpsHost:
// copies' sources are gathered first (the tensor before any op); then one block per row runs
// that row's ops in order, each gathering its elements into scratch, applying, scattering.
#include "engine/cuda/kernels/block_reduce.cuh"
#include "engine/cuda/kernels/launchers.h"
#include "engine/backend/row_ops.h"

namespace lensd::cuda {
namespace {

constexpr int kThreads = 256;

// buf[0, n) <-> the elements under segments [begin, end) of base.
__device__ void GatherSegments(const float* base, const RowSegment* segs, int begin, int end,
                               float* buf) {
  for (int s = begin; s < end; ++s) {
    for (int e = threadIdx.x; e < segs[s].length; e += blockDim.x) buf[e] = base[segs[s].offset + e];
    buf += segs[s].length;
  }
}

__device__ void ScatterSegments(const float* buf, const RowSegment* segs, int begin, int end,
                                float* base) {
  for (int s = begin; s < end; ++s) {
    for (int e = threadIdx.x; e < segs[s].length; e += blockDim.x) base[segs[s].offset + e] = buf[e];
    buf += segs[s].length;
  }
}

__global__ void GatherCopiesKernel(const RowOp* ops, int n_ops, const RowSegment* segs,
                                   const float* source, const int64_t* scratch_at, float* scratch) {
  const RowOp& op = ops[blockIdx.x];
  if (op.kind != RowOpKind::kCopy) return;
  GatherSegments(source, segs, op.src_seg_begin, op.src_seg_end, scratch + scratch_at[blockIdx.x]);
}

__device__ void ApplyVectors(const RowOp& op, const float* params, float* x, float* shared) {
  for (int v = 0; v < op.n; v += op.vec) {
    float part = 0;
    if (op.kind == RowOpKind::kProject) {
      for (int i = threadIdx.x; i < op.vec; i += blockDim.x) part += x[v + i] * params[i];
      const float shift = op.a - BlockSum(part, shared);
      for (int i = threadIdx.x; i < op.vec; i += blockDim.x) x[v + i] += shift * params[i];
    } else {  // kSaeClamp: params = [w, u, b_dec]
      for (int i = threadIdx.x; i < op.vec; i += blockDim.x) {
        part += (x[v + i] - params[2 * op.vec + i]) * params[i];
      }
      const float pre = op.a + BlockSum(part, shared);
      const float f = pre > op.b ? pre : 0.0f;
      if (op.only_active && f <= 0.0f) continue;
      for (int i = threadIdx.x; i < op.vec; i += blockDim.x) x[v + i] += (op.c - f) * params[op.vec + i];
    }
    __syncthreads();
  }
}

__device__ void ApplyOne(const RowOp& op, const RowSegment* segs, const float* values,
                         float* buf, float* shared) {
  const float* value = values + op.value;
  switch (op.kind) {
    case RowOpKind::kZero:
      for (int i = threadIdx.x; i < op.n; i += blockDim.x) buf[i] = 0.0f;
      break;
    case RowOpKind::kScale:
      for (int i = threadIdx.x; i < op.n; i += blockDim.x) buf[i] *= op.a;
      break;
    case RowOpKind::kSet:
      for (int i = threadIdx.x; i < op.n; i += blockDim.x) buf[i] = value[i];
      break;
    case RowOpKind::kAdd:
      for (int i = threadIdx.x; i < op.n; i += blockDim.x) buf[i] += op.a * value[i];
      break;
    case RowOpKind::kCopy:
      break;  // the gathered source is the result
    case RowOpKind::kProject:
    case RowOpKind::kSaeClamp:
      ApplyVectors(op, value, buf, shared);
      break;
    case RowOpKind::kNoise: {
      float* at = buf;
      for (int s = op.seg_begin; s < op.seg_end; ++s) {
        for (int e = threadIdx.x; e < segs[s].length; e += blockDim.x) {
          at[e] += op.a * NoiseSample(op.seed, op.prompt, op.position, int64_t{segs[s].element} + e);
        }
        at += segs[s].length;
      }
      break;
    }
  }
}

// One block per row: that row's ops [row_begin[b], row_begin[b + 1]) in order.
__global__ void RowOpsKernel(const RowOp* ops, const int* row_begin, const RowSegment* segs,
                             const float* values, const int64_t* scratch_at, float* scratch,
                             float* x) {
  __shared__ float shared[32];
  for (int i = row_begin[blockIdx.x]; i < row_begin[blockIdx.x + 1]; ++i) {
    const RowOp& op = ops[i];
    float* buf = scratch + scratch_at[i];
    if (op.kind != RowOpKind::kCopy) GatherSegments(x, segs, op.seg_begin, op.seg_end, buf);
    __syncthreads();
    ApplyOne(op, segs, values, buf, shared);
    __syncthreads();
    ScatterSegments(buf, segs, op.seg_begin, op.seg_end, x);
    __syncthreads();
  }
}

}  // namespace

cudaError_t LaunchRowOps(const RowOp* ops, int n_ops, const int* row_begin, int n_rows,
                         const RowSegment* segs, const float* values, const int64_t* scratch_at,
                         float* scratch, const float* source, float* x, cudaStream_t stream) {
  if (n_ops == 0) return cudaSuccess;
  GatherCopiesKernel<<<n_ops, kThreads, 0, stream>>>(ops, n_ops, segs, source, scratch_at, scratch);
  RowOpsKernel<<<n_rows, kThreads, 0, stream>>>(ops, row_begin, segs, values, scratch_at, scratch, x);
  return cudaGetLastError();
}

}  // namespace lensd::cuda
