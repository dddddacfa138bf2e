// NumPy .npz archives (a zip of .npy arrays, stored or deflated, as np.savez and
// np.savez_compressed write them) read through libzip: Gemma Scope's params.npz.
#ifndef LENSD_ENGINE_MODEL_NPZ_H_
#define LENSD_ENGINE_MODEL_NPZ_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lensd {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, converted to float32
};

// Every array of the archive by name (without ".npy"). Little-endian float16/32/64 in C order;
// errors name the file and the member (a Fortran-order array, another dtype, a truncated or
// malformed header, a member that is not .npy).
absl::StatusOr<std::map<std::string, NpyArray>> ReadNpz(const std::string& path);

// One .npy file's bytes (`what` names it in errors).
absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes, const std::string& what);

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_NPZ_H_
