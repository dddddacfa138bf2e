// CudaBackend: attention over the paged KV pools.
#include <vector>

#include "engine/cuda/cuda_backend_impl.h"
#include "engine/cuda/kernels/launchers.h"

namespace lensd {

bool CudaBackend::Flash(const AttentionSeq& a, int dh) {
  return a.n_q >= kFlashMinQueries && a.scores.empty() && a.pattern.empty() &&
         dh <= cuda::kFlashMaxHeadDim;
}

// Prefill chunks of at least kFlashMinQueries queries whose attention maps are not captured
// take the flash kernel (one launch per sequence); the other queries whose maps nobody reads or
// gives (decode steps) take the decode kernel, the rest (captured or edited maps) the per-query
// kernel, one launch each.
void CudaBackend::Attention(TensorView q, KvLayerView kv, const std::vector<AttentionSeq>& seqs,
                            const AttentionParams& params, TensorView z) {
  const float scale = params.scale;
  const int window = params.window;
  const float softcap = params.softcap;
  if (!Use()) return;
  const int heads = static_cast<int>(q.shape[1]), dh = static_cast<int>(q.shape[2]);
  const int kv_heads = static_cast<int>(kv.k.shape[1]);
  std::vector<cuda::AttentionQuery> queries, plain;  // plain: no maps read or given
  std::vector<int32_t> tables;
  std::vector<float*> scores, patterns;
  std::vector<int> n_q, offsets;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttentionSeq& a = seqs[s];
    offsets.push_back(static_cast<int>(tables.size()));
    const int n_blocks = (a.start_pos + a.n_q + kv.block_size - 1) / kv.block_size;
    tables.insert(tables.end(), a.block_table, a.block_table + n_blocks);
    if (GraphStep()) tables.resize(offsets.back() + graphs_->key().table_width, 0);  // fixed size
    if (!Flash(a, dh)) {
      const bool maps = a.input != AttentionSeq::Input::kQueries || !a.scores.empty() ||
                        !a.pattern.empty();
      for (int i = 0; i < a.n_q; ++i) {
        (maps ? queries : plain)
            .push_back({a.q_begin + i, a.start_pos + i, offsets.back(), static_cast<int>(s), i,
                        static_cast<int>(a.input)});
      }
    }
    scores.push_back(a.scores.empty() ? nullptr : F(a.scores));
    patterns.push_back(a.pattern.empty() ? nullptr : F(a.pattern));
    n_q.push_back(a.n_q);
  }
  const int32_t* dtables = Stage(1, tables.data(), tables.size());
  const auto* dqueries = Stage(2, queries.data(), queries.size());
  float* const* dscores = Stage(3, scores.data(), scores.size());
  float* const* dpatterns = Stage(4, patterns.data(), patterns.size());
  const int* dnq = Stage(5, n_q.data(), n_q.size());
  const auto* dplain = Stage(11, plain.data(), plain.size());
  if (Skip()) return;
  CheckCuda(OnKvPools(kv,
                      [&](auto* k_pool, auto* v_pool) {
                        return cuda::LaunchDecodeAttention(F(q), k_pool, v_pool, dtables, dplain,
                                                           static_cast<int>(plain.size()), heads,
                                                           kv_heads, dh, kv.block_size, scale,
                                                           window, softcap, F(z), stream_.get());
                      }),
            "DecodeAttention");
  CheckCuda(OnKvPools(kv,
                      [&](auto* k_pool, auto* v_pool) {
                        return cuda::LaunchAttention(
                            F(q), k_pool, v_pool, dtables, dqueries,
                            static_cast<int>(queries.size()), heads, kv_heads, dh, kv.block_size,
                            scale, window, softcap, dscores, dpatterns, dnq, F(z), stream_.get());
                      }),
            "Attention");
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttentionSeq& a = seqs[s];
    if (!Flash(a, dh)) continue;
    CheckCuda(OnKvPools(kv,
                        [&](auto* k_pool, auto* v_pool) {
                          return cuda::LaunchFlashAttention(
                              F(q), k_pool, v_pool, dtables + offsets[s], a.q_begin, a.n_q,
                              a.start_pos, heads, kv_heads, dh, kv.block_size, scale, window,
                              softcap, F(z), stream_.get());
                        }),
              "FlashAttention");
  }
}

}  // namespace lensd
