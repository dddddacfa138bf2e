// One prompt's run_with_cache answer as host float32 tensors, wherever it was computed (the
// offline paths) or reassembled (lensctl from a RunWithCache stream).
#ifndef LENSD_ENGINE_CORE_CACHE_RESULT_H_
#define LENSD_ENGINE_CORE_CACHE_RESULT_H_

#include <map>
#include <optional>
#include <string>

#include "engine/core/tensor.h"

namespace lensd {

struct CacheResult {
  Buffer logits;                        // [1, P, V]
  std::map<std::string, Buffer> cache;  // hook name -> tensor (gradients: "<hook>_grad")
  std::optional<double> objective;      // with gradients: the objective's value
};

}  // namespace lensd

#endif  // LENSD_ENGINE_CORE_CACHE_RESULT_H_
