// CudaBackend: GEMMs (cuBLASLt) and the elementwise, norm, rotary and KV-cache kernels.
#include "engine/cuda/cuda_backend_impl.h"
#include "engine/cuda/kernels/launchers.h"
#include "engine/cuda/kernels/norm.h"

namespace lensd {

void CudaBackend::Linear(TensorView x, TensorView w, TensorView bias, TensorView y) {
  if (!Use()) return;
  const void* xs = GemmInput(x, w.dtype);
  if (Skip()) return;
  Fail(gemm_.Run(xs, w.data, w.dtype, CF(bias), F(y), static_cast<int>(x.shape[0]),
                 static_cast<int>(w.shape[0]), static_cast<int>(w.shape[1]), stream_.get()));
}

const void* CudaBackend::GemmInput(TensorView x, DType in) {
  if (in == DType::kF32) return x.data;
  const size_t bytes = x.NumElements() * DTypeSize(in);
  void* narrow = nullptr;
  if (GraphStep()) {
    narrow = graphs_->Allocate(bytes);
    if (Replaying()) return narrow;
  } else {
    if (!Reserve(narrow_, bytes)) return nullptr;
    narrow = narrow_.As<void>();
  }
  const cudaError_t err =
      in == DType::kBF16
          ? cuda::LaunchNarrow(F(x), static_cast<__nv_bfloat16*>(narrow), x.NumElements(),
                               stream_.get())
          : cuda::LaunchNarrow(F(x), static_cast<__half*>(narrow), x.NumElements(), stream_.get());
  CheckCuda(err, "narrow GEMM input");
  return narrow;
}

void CudaBackend::Gather(TensorView table, const int32_t* ids, TensorView y) {
  if (!Use()) return;
  const int rows = static_cast<int>(y.shape[0]), d = static_cast<int>(y.shape[1]);
  const int32_t* dids = Stage(0, ids, rows);
  if (Skip()) return;
  cudaError_t err = cudaSuccess;
  switch (table.dtype) {
    case DType::kF32:
      err = cuda::LaunchGather(F(table), dids, rows, d, F(y), stream_.get());
      break;
    case DType::kBF16:
      err = cuda::LaunchGather(table.As<__nv_bfloat16>(), dids, rows, d, F(y), stream_.get());
      break;
    case DType::kF16:
      err = cuda::LaunchGather(table.As<__half>(), dids, rows, d, F(y), stream_.get());
      break;
    case DType::kI32:
      err = cudaErrorInvalidValue;  // tables are floating point (programmer error)
      break;
  }
  CheckCuda(err, "Gather");
}

void CudaBackend::Norm(NormKind kind, TensorView x, TensorView w, TensorView b, float eps,
                       TensorView y, TensorView normalized, TensorView scale) {
  if (!Use() || Replaying()) return;
  CheckCuda(cuda::LaunchNorm<float>(kind == NormKind::kLayerNorm, F(x), CF(w), CF(b), eps,
                                    static_cast<int>(x.shape[0]), static_cast<int>(x.shape[1]),
                                    F(y), normalized.empty() ? nullptr : F(normalized),
                                    scale.empty() ? nullptr : F(scale), stream_.get()),
            "Norm");
}

void CudaBackend::Rope(TensorView x, TensorView inv_freq, int rotary_dim, const int32_t* positions,
                       float scale) {
  if (!Use()) return;
  const int tokens = static_cast<int>(x.shape[0]);
  const int32_t* dpos = Stage(0, positions, tokens);
  if (Skip()) return;
  CheckCuda(cuda::LaunchRope(F(x), F(inv_freq), dpos, tokens, static_cast<int>(x.shape[1]),
                             static_cast<int>(x.shape[2]), rotary_dim, scale, stream_.get()),
            "Rope");
}

void CudaBackend::WriteKv(TensorView k, TensorView v, const int32_t* slots, KvLayerView kv) {
  if (!Use()) return;
  const int tokens = static_cast<int>(k.shape[0]);
  const int32_t* dslots = Stage(0, slots, tokens);
  if (Skip()) return;
  const int row = static_cast<int>(k.NumElements() / std::max<int64_t>(1, tokens));
  CheckCuda(OnKvPools(kv,
                      [&](auto* k_pool, auto* v_pool) {
                        return cuda::LaunchWriteKv(F(k), F(v), dslots, tokens, row, k_pool,
                                                   v_pool, stream_.get());
                      }),
            "WriteKv");
}

void CudaBackend::Activation(ActKind kind, TensorView x, TensorView y) {
  if (!Use() || Replaying()) return;
  CheckCuda(
      cuda::LaunchActivation(static_cast<int>(kind), F(x), F(y), x.NumElements(), stream_.get()),
      "Activation");
}

void CudaBackend::GatedActivation(ActKind kind, TensorView gate, TensorView up, TensorView y) {
  if (!Use() || Replaying()) return;
  CheckCuda(cuda::LaunchGatedActivation(static_cast<int>(kind), F(gate), F(up), F(y),
                                        gate.NumElements(), stream_.get()),
            "GatedActivation");
}

void CudaBackend::AddRowsScaled(TensorView src, const int32_t* rows, const float* scales,
                                TensorView dst) {
  if (!Use() || Replaying()) return;
  const int n = static_cast<int>(src.shape[0]), d = static_cast<int>(src.shape[1]);
  const int32_t* drows = Stage(12, rows, n);
  const float* dscales = Stage(13, scales, n);
  if (Skip()) return;
  CheckCuda(cuda::LaunchAddRowsScaled(F(src), drows, dscales, n, d, F(dst), stream_.get()),
            "AddRowsScaled");
}

void CudaBackend::ScaleAndCap(TensorView x, float scale, float cap) {
  if (!Use() || Replaying()) return;
  CheckCuda(cuda::LaunchScaleAndCap(F(x), scale, cap, x.NumElements(), stream_.get()),
            "ScaleAndCap");
}

void CudaBackend::Add(TensorView a, TensorView b, TensorView y) {
  if (!Use() || Replaying()) return;
  CheckCuda(cuda::LaunchAdd(F(a), F(b), F(y), a.NumElements(), stream_.get()), "Add");
}

void CudaBackend::Copy(TensorView src, TensorView dst) {
  if (!Use() || Replaying()) return;
  CheckCuda(cudaMemcpyAsync(dst.data, src.data, src.NumBytes(), cudaMemcpyDeviceToDevice,
                            stream_.get()),
            "Copy");
}

}  // namespace lensd
