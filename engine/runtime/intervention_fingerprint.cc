// The fingerprints of interventions that prefix-cache keys carry (interventions.h).
#include <cstring>

#include "engine/core/hash.h"
#include "engine/runtime/interventions_internal.h"

namespace lensd {
namespace {

// Chained splitmix64 over every field (floats by their bits).
class Hasher {
 public:
  void Add(uint64_t v) {
    h_ = Mix64(h_ + (kGoldenGamma ^ v));
  }
  void Add(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    Add(uint64_t{bits});
  }
  void Add(const std::vector<int>& v) {
    Add(uint64_t{v.size()});
    for (int x : v) Add(static_cast<uint64_t>(static_cast<int64_t>(x)));
  }
  void Add(const PositionSelector& s) {
    Add(static_cast<uint64_t>(s.kind));
    Add(s.indices);
    Add(static_cast<uint64_t>(s.start.value_or(INT32_MIN)));
    Add(static_cast<uint64_t>(s.stop.value_or(INT32_MIN)));
  }
  void Add(const FloatTensor& t) {
    Add(uint64_t{t.shape.size()});
    for (int64_t d : t.shape) Add(static_cast<uint64_t>(d));
    for (float x : t.data) Add(x);
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0;
};

}  // namespace

uint64_t FingerprintOf(const std::vector<Intervention>& list) {
  Hasher h;
  for (const Intervention& iv : list) {
    h.Add(static_cast<uint64_t>(iv.hook.point)), h.Add(static_cast<uint64_t>(iv.hook.layer + 1));
    h.Add(static_cast<uint64_t>(iv.op));
    h.Add(iv.prompts), h.Add(iv.positions), h.Add(iv.heads), h.Add(iv.keys);
    for (float f : {iv.factor, iv.coeff, iv.target, iv.encoder_bias, iv.threshold, iv.std}) h.Add(f);
    h.Add(uint64_t{iv.only_active}), h.Add(iv.seed), h.Add(static_cast<uint64_t>(iv.source + 1));
    h.Add(uint64_t{iv.source_positions.has_value()});
    if (iv.source_positions) h.Add(*iv.source_positions);
    h.Add(iv.value), h.Add(iv.decoder), h.Add(iv.decoder_bias);
  }
  return h.value() == 0 ? 1 : h.value();
}

uint64_t InterventionSet::Fingerprint(int prompt) const {
  Hasher h;
  h.Add(fingerprint_), h.Add(static_cast<uint64_t>(prompt));
  return h.value();
}

}  // namespace lensd
