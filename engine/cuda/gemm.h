// y[T, N] (float32) = x[T, K] · w[N, K]ᵀ (+ bias[N]) through cuBLASLt, with x and w in the
// weights' dtype (float32, bfloat16 or float16) and float32 accumulation (never TF32).
//
// Batch invariance: a row's result must not depend on how many rows share its call (the
// scheduler batches unrelated requests). Each (N, K, dtype, bias) shape therefore gets ONE
// algorithm, chosen once and used for every row count: its tile shape and its split-K factor
// (fixed per shape from N and the SM count, reduced deterministically in float32) do not
// change with T, so neither does the order in which a row's products are summed. The split-K
// factor gives small-T (decode) calls enough thread blocks to stream the weights at memory
// bandwidth; rows go in chunks of kMaxRows so split-K partials fit the fixed workspace. A row
// count the fixed algorithm rejects falls back to cuBLASLt's own choice (logged once; that
// shape then loses batch invariance). Not thread-safe: one per backend, used by its thread.
#ifndef LENSD_ENGINE_CUDA_GEMM_H_
#define LENSD_ENGINE_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"

namespace lensd::cuda {

class Gemm {
 public:
  static constexpr int kMaxRows = 256;
  static constexpr size_t kWorkspace = size_t{32} << 20;

  // `workspace`: kWorkspace bytes of device memory, used on the caller's stream only.
  Gemm(cublasLtHandle_t blas, int sm_count, void* workspace);
  ~Gemm();

  // All pointers device memory; `bias` may be null. Enqueued on `stream`. Errors name the
  // cuBLASLt status and the shape: RESOURCE_EXHAUSTED when cuBLASLt cannot allocate, INTERNAL
  // when it has no algorithm for the shape (nothing is queued then).
  absl::Status Run(const void* x, const void* w, DType dtype, const float* bias, float* y, int T, int N,
           int K, cudaStream_t stream);

 private:
  struct Plan;
  absl::StatusOr<Plan*> PlanFor(int N, int K, DType dtype, bool bias);
  int SplitK(int N, int K) const;
  // Sets p.algo's split-K factor to SplitK(N, K) when the algorithm accepts it.
  void FixSplitK(Plan& p, int N, int K) const;
  // cuBLASLt runs `algo` for p's current layouts within our workspace.
  bool Accepts(const Plan& p, const cublasLtMatmulAlgo_t& algo) const;
  // The fixed algorithm when it accepts `rows`, else null (cuBLASLt's heuristic per call).
  const cublasLtMatmulAlgo_t* AlgoFor(Plan& p, int rows);

  cublasLtHandle_t blas_;
  int sm_count_;
  void* workspace_;
  std::map<std::tuple<int, int, DType, bool>, std::unique_ptr<Plan>> plans_;
};

}  // namespace lensd::cuda

#endif  // LENSD_ENGINE_CUDA_GEMM_H_
