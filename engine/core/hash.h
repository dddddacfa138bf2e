// splitmix64, the one integer mixer of the project: noise samples (host and device alike),
// prefix-cache block keys and intervention fingerprints.
#ifndef LENSD_ENGINE_CORE_HASH_H_
#define LENSD_ENGINE_CORE_HASH_H_

#include <cstdint>

#if defined(__CUDACC__)
#define LENSD_HOST_DEVICE __host__ __device__
#else
#define LENSD_HOST_DEVICE
#endif

namespace lensd {

inline constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;

// splitmix64's output function (a bijection of 64 bits).
LENSD_HOST_DEVICE inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// One splitmix64 step from state `z`.
LENSD_HOST_DEVICE inline uint64_t SplitMix64(uint64_t z) { return Mix64(z + kGoldenGamma); }

}  // namespace lensd

#endif  // LENSD_ENGINE_CORE_HASH_H_
