#include "engine/runtime/kv_cache.h"

#include <algorithm>

#include "engine/core/hash.h"

namespace lensd {
namespace {

uint64_t KeyOf(PrefixKey key, int block, int block_size) {
  return (block + 1) * block_size <= key.first_position ? key.plain : key.key;
}

}  // namespace

BlockAllocator::BlockAllocator(int num_blocks, int block_size)
    : num_blocks_(num_blocks), block_size_(block_size), blocks_(num_blocks) {
  free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);  // hand out low ids first
}

uint64_t BlockAllocator::HashOf(uint64_t parent, const int32_t* tokens, uint64_t key) const {
  uint64_t h = SplitMix64(parent ^ SplitMix64(key));
  for (int i = 0; i < block_size_; ++i) h = SplitMix64(h ^ static_cast<uint32_t>(tokens[i]));
  return h == 0 ? 1 : h;  // 0 means unpublished
}

void BlockAllocator::Unpublish(int32_t id) {
  Block& b = blocks_[id];
  by_hash_.erase(b.hash);
  b.hash = 0;
  b.tokens.clear();
}

int32_t BlockAllocator::Take() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    id = lru_.front();
    lru_.pop_front();
    Unpublish(id);
    ++evicted_;
  }
  blocks_[id].refs = 1;
  return id;
}

bool BlockAllocator::Reserve(std::vector<int32_t>& table, int n_tokens) {
  const int need = BlocksFor(n_tokens, block_size_) - static_cast<int>(table.size());
  if (need <= 0) return true;
  if (need > num_free()) return false;
  for (int i = 0; i < need; ++i) table.push_back(Take());
  return true;
}

void BlockAllocator::Release(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    Block& b = blocks_[*it];
    if (--b.refs > 0) continue;
    if (b.hash != 0) {
      b.lru = lru_.insert(lru_.end(), *it);
    } else {
      free_.push_back(*it);
    }
  }
  table.clear();
}

int BlockAllocator::MatchPrefix(const std::vector<int32_t>& tokens, PrefixKey key, int max_tokens,
                                std::vector<int32_t>& table) {
  uint64_t parent = 0;
  const int limit = std::min<int>(max_tokens, static_cast<int>(tokens.size()));
  for (int b = 0; (b + 1) * block_size_ <= limit; ++b) {
    const int32_t* first = tokens.data() + b * block_size_;
    const uint64_t h = HashOf(parent, first, KeyOf(key, b, block_size_));
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    Block& block = blocks_[it->second];
    if (block.parent != parent || !std::equal(first, first + block_size_, block.tokens.begin())) {
      break;  // a hash collision: not this prefix
    }
    if (block.refs++ == 0) lru_.erase(block.lru);
    table.push_back(it->second);
    parent = h;
  }
  return static_cast<int>(table.size()) * block_size_;
}

void BlockAllocator::Publish(const std::vector<int32_t>& table, const std::vector<int32_t>& tokens,
                             int computed, PrefixKey key) {
  uint64_t parent = 0;
  for (int b = 0; (b + 1) * block_size_ <= computed && b < static_cast<int>(table.size()); ++b) {
    Block& block = blocks_[table[b]];
    if (block.hash != 0) {  // published already (by this sequence, or matched)
      parent = block.hash;
      continue;
    }
    const int32_t* first = tokens.data() + b * block_size_;
    const uint64_t h = HashOf(parent, first, KeyOf(key, b, block_size_));
    if (by_hash_.emplace(h, table[b]).second) {  // else another block holds this prefix
      block.hash = h;
      block.parent = parent;
      block.tokens.assign(first, first + block_size_);
    }
    parent = h;
  }
}

}  // namespace lensd
