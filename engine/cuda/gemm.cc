#include "engine/cuda/gemm.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/cuda/cuda_handles.h"

namespace lensd::cuda {
namespace {

cudaDataType_t BlasType(DType d) {
  switch (d) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kI32:
      return CUDA_R_32I;
  }
  return CUDA_R_32F;
}

template <typename T>
absl::Status SetDesc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, T value) {
  return BlasStatus(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)), "matmul desc");
}

absl::Status SetRows(cublasLtMatrixLayout_t layout, int rows) {
  const uint64_t cols = static_cast<uint64_t>(rows);  // tokens are columns, column-major
  return BlasStatus(
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof(cols)),
      "layout rows");
}

std::string GemmName(int N, int K, DType dtype) {
  return absl::StrCat(" (GEMM N=", N, " K=", K, " ", std::string(DTypeName(dtype)), ")");
}

}  // namespace

// Row-major y[T,N] = x[T,K]·w[N,K]ᵀ is column-major yᵀ[N,T] = op(w)·xᵀ with w read as a
// column-major [K,N] matrix, transposed.
struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::set<int> accepted, rejected;  // row counts checked against `algo`
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

Gemm::Gemm(cublasLtHandle_t blas, int sm_count, void* workspace)
    : blas_(blas), sm_count_(sm_count), workspace_(workspace) {}

Gemm::~Gemm() = default;

int Gemm::SplitK(int N, int K) const {
  // Enough thread blocks for a one-row call to stream the weights from every SM, assuming
  // 128-row output tiles; each split keeps at least 128 of K; partials fit the workspace.
  const int tiles = (N + 127) / 128;
  int s = std::clamp((sm_count_ + tiles - 1) / tiles, 1, 16);
  while (s > 1 && K / s < 128) --s;
  while (s > 1 && size_t{4} * s * kMaxRows * N > kWorkspace) --s;
  return s;
}

absl::StatusOr<Gemm::Plan*> Gemm::PlanFor(int N, int K, DType dtype, bool bias) {
  const auto key = std::make_tuple(N, K, dtype, bias);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  auto p = std::make_unique<Plan>();  // kept only when complete: a failure is retried
  const std::string shape = GemmName(N, K, dtype);
  RETURN_IF_ERROR(
      BlasStatus(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc" + shape));
  RETURN_IF_ERROR(SetDesc(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T));
  RETURN_IF_ERROR(SetDesc(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N));
  if (bias) RETURN_IF_ERROR(SetDesc(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS));
  RETURN_IF_ERROR(BlasStatus(cublasLtMatrixLayoutCreate(&p->a, BlasType(dtype), K, N, K),
                             "layout w" + shape));
  RETURN_IF_ERROR(BlasStatus(cublasLtMatrixLayoutCreate(&p->b, BlasType(dtype), K, kMaxRows, K),
                             "layout x" + shape));
  RETURN_IF_ERROR(BlasStatus(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, N, kMaxRows, N),
                             "layout y" + shape));
  cublasLtMatmulPreference_t pref;
  RETURN_IF_ERROR(BlasStatus(cublasLtMatmulPreferenceCreate(&pref), "preference" + shape));
  const size_t ws = kWorkspace;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  absl::Status st = BlasStatus(cublasLtMatmulPreferenceSetAttribute(
                                   pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                               "workspace" + shape);
  if (st.ok()) {
    st = BlasStatus(cublasLtMatmulAlgoGetHeuristic(blas_, p->desc, p->a, p->b, p->c, p->c, pref, 1,
                                                   &result, &found),
                    "heuristic" + shape);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  RETURN_IF_ERROR(st);
  if (found == 0) return absl::InternalError("no cuBLASLt algorithm for" + shape);
  p->algo = result.algo;
  FixSplitK(*p, N, K);
  spdlog::debug("gemm N={} K={} {}: split-K {}", N, K, DTypeName(dtype), SplitK(N, K));
  return (plans_[key] = std::move(p)).get();
}

// Our split-K factor when the algorithm takes it with a deterministic float32 reduction;
// otherwise the heuristic's own configuration, which is just as fixed.
void Gemm::FixSplitK(Plan& p, int N, int K) const {
  int32_t splitk_ok = 0;
  uint32_t schemes = 0;
  size_t written = 0;
  cublasLtMatmulAlgoCapGetAttribute(&p.algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_ok,
                                    sizeof(splitk_ok), &written);
  cublasLtMatmulAlgoCapGetAttribute(&p.algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &schemes,
                                    sizeof(schemes), &written);
  const uint32_t splits = static_cast<uint32_t>(SplitK(N, K));
  const uint32_t scheme =
      splits > 1 ? CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE : CUBLASLT_REDUCTION_SCHEME_NONE;
  if (splitk_ok && (splits == 1 || (schemes & scheme))) {
    cublasLtMatmulAlgo_t tuned = p.algo;
    cublasLtMatmulAlgoConfigSetAttribute(&tuned, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                         sizeof(splits));
    cublasLtMatmulAlgoConfigSetAttribute(&tuned, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                         sizeof(scheme));
    if (Accepts(p, tuned)) p.algo = tuned;
  }
}

bool Gemm::Accepts(const Plan& p, const cublasLtMatmulAlgo_t& algo) const {
  cublasLtMatmulHeuristicResult_t check{};
  return cublasLtMatmulAlgoCheck(blas_, p.desc, p.a, p.b, p.c, p.c, &algo, &check) ==
             CUBLAS_STATUS_SUCCESS &&
         check.workspaceSize <= kWorkspace;
}

const cublasLtMatmulAlgo_t* Gemm::AlgoFor(Plan& p, int rows) {
  if (p.accepted.count(rows)) return &p.algo;
  if (p.rejected.count(rows)) return nullptr;
  if (Accepts(p, p.algo)) {
    p.accepted.insert(rows);
    return &p.algo;
  }
  spdlog::warn(
      "cuBLASLt rejects the fixed GEMM algorithm for {} rows; results of this shape "
      "may depend on batch composition",
      rows);
  p.rejected.insert(rows);
  return nullptr;
}

absl::Status Gemm::Run(const void* x, const void* w, DType dtype, const float* bias, float* y,
                       int T, int N, int K, cudaStream_t stream) {
  ASSIGN_OR_RETURN(Plan* const plan, PlanFor(N, K, dtype, bias != nullptr));
  Plan& p = *plan;
  if (bias != nullptr) RETURN_IF_ERROR(SetDesc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias));
  const float alpha = 1.0f, beta = 0.0f;
  const size_t in_size = DTypeSize(dtype);
  for (int t = 0; t < T; t += kMaxRows) {
    const int rows = std::min(kMaxRows, T - t);
    RETURN_IF_ERROR(SetRows(p.b, rows));
    RETURN_IF_ERROR(SetRows(p.c, rows));
    const void* xs = static_cast<const char*>(x) + in_size * t * K;
    float* ys = y + static_cast<int64_t>(t) * N;
    RETURN_IF_ERROR(BlasStatus(
        cublasLtMatmul(blas_, p.desc, &alpha, w, p.a, xs, p.b, &beta, ys, p.c, ys, p.c,
                       AlgoFor(p, rows), workspace_, kWorkspace, stream),
        absl::StrCat("cublasLtMatmul", GemmName(N, K, dtype), " at ", rows, " rows")));
  }
  return absl::OkStatus();
}

}  // namespace lensd::cuda
