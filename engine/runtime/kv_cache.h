// Paged KV cache bookkeeping: fixed-size blocks handed out from a free list. The K/V memory
// itself lives on each device (one pool per layer, indexed by the same block ids), so a
// sequence's block table is valid on every device of a pipeline. Not thread-safe: owned by
// the scheduler thread (or the single caller of the offline paths).
#ifndef LENSD_ENGINE_RUNTIME_KV_CACHE_H_
#define LENSD_ENGINE_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <vector>

namespace lensd {

class BlockAllocator {
 public:
  BlockAllocator(int num_blocks, int block_size);
  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  static int BlocksFor(int n_tokens, int block_size) {
    return (n_tokens + block_size - 1) / block_size;
  }
  // Grows `table` to cover `n_tokens` positions. On shortage returns false and leaves
  // `table` unchanged.
  bool Reserve(std::vector<int32_t>& table, int n_tokens);
  // Returns every block of `table` to the free list and clears it.
  void Release(std::vector<int32_t>& table);

 private:
  int num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_KV_CACHE_H_
