// Paged KV cache bookkeeping: fixed-size blocks, reference-counted so that sequences with a
// common prefix share them (automatic prefix caching). The K/V memory itself lives on each
// device (one pool per layer, indexed by the same block ids), so a sequence's block table is
// valid on every device of a pipeline. Not thread-safe: owned by the scheduler thread (or the
// single caller of the offline paths).
//
// A full block that its sequence has computed may be published under a hash of everything
// that determined its K/V: the tokens from position 0 to the block's end and a context key
// (0 for plain traffic; the interventions' fingerprint for blocks they reach). A later
// sequence whose prefix hashes the same takes the block instead of recomputing it — bit for
// bit what it would compute, the engine being batch-invariant. Unreferenced published blocks
// wait in an LRU list and are evicted only when a reservation needs the room.
#ifndef LENSD_ENGINE_RUNTIME_KV_CACHE_H_
#define LENSD_ENGINE_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace lensd {

// Which context key each block of a sequence hashes with: blocks ending at or before
// `first_position` (the first position an intervention touches) take `plain` (0, or a key of
// the whole sequence's such as longrope's long frequencies); the others take `key`.
struct PrefixKey {
  int first_position = INT32_MAX;
  uint64_t key = 0;
  uint64_t plain = 0;
};

class BlockAllocator {
 public:
  BlockAllocator(int num_blocks, int block_size);
  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  // Blocks a reservation can take: free ones and unreferenced cached ones.
  int num_free() const { return static_cast<int>(free_.size() + lru_.size()); }
  // Published blocks (in use or waiting for reuse).
  int num_cached() const { return static_cast<int>(by_hash_.size()); }
  // Cached blocks evicted so far to make room.
  int64_t evicted() const { return evicted_; }
  static int BlocksFor(int n_tokens, int block_size) {
    return (n_tokens + block_size - 1) / block_size;
  }

  // Grows `table` to cover `n_tokens` positions, evicting unreferenced cached blocks (least
  // recently used first) when no free block is left. On shortage returns false and leaves
  // `table` unchanged.
  bool Reserve(std::vector<int32_t>& table, int n_tokens);
  // Drops `table`'s references (cached blocks stay for reuse) and clears it.
  void Release(std::vector<int32_t>& table);

  // Fills the empty `table` with the cached blocks of the longest published prefix of
  // `tokens`, at most `max_tokens` positions (whole blocks), taking a reference to each;
  // returns the positions covered.
  int MatchPrefix(const std::vector<int32_t>& tokens, PrefixKey key, int max_tokens,
                  std::vector<int32_t>& table);
  // Publishes the full blocks of `table` within positions [0, computed) of `tokens` (K/V
  // written) that are not published yet.
  void Publish(const std::vector<int32_t>& table, const std::vector<int32_t>& tokens, int computed,
               PrefixKey key);

 private:
  struct Block {
    int refs = 0;
    uint64_t hash = 0;            // 0: unpublished
    std::vector<int32_t> tokens;  // published: its tokens, checked on every match
    uint64_t parent = 0;          // published: the previous block's hash
    std::list<int32_t>::iterator lru;  // valid while unreferenced and published
  };
  uint64_t HashOf(uint64_t parent, const int32_t* tokens, uint64_t key) const;
  int32_t Take();  // a free block, else the least recently used cached one (refs 0)
  void Unpublish(int32_t id);

  int num_blocks_;
  int block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;
  std::list<int32_t> lru_;  // unreferenced published blocks, least recently used first
  std::unordered_map<uint64_t, int32_t> by_hash_;
  int64_t evicted_ = 0;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_KV_CACHE_H_
