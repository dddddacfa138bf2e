// What the Google Benchmark binaries share: a GPT-2-small-shaped random model per thread count
// (the CPU backend's compute threads are fixed at load), loaded once and kept for the process.
#ifndef LENSD_BENCH_BENCH_MODEL_H_
#define LENSD_BENCH_BENCH_MODEL_H_

#include <map>

#include "engine/model/weights.h"
#include "engine/runtime/model.h"

namespace lensd {

inline Model& Gpt2SmallModel(int threads) {
  static std::map<int, Model*>* models = new std::map<int, Model*>();
  Model*& model = (*models)[threads];
  if (model == nullptr) {
    LoadOptions o;
    o.kv_tokens = 4096;
    o.threads = threads;
    auto source = MakeRandomSource(BuiltinConfigNamed("gpt2-small").value(), 1);
    model = Model::FromSource(*source, o).value().release();
  }
  return *model;
}

}  // namespace lensd

#endif  // LENSD_BENCH_BENCH_MODEL_H_
