// Helpers shared by the test binaries: where ../shared lives, reading reference tensors,
// and the golden comparison rule (1e-4 × max(1, max|ref|), identical -inf positions).
#ifndef LENSD_TESTS_TEST_UTIL_H_
#define LENSD_TESTS_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/tensor.h"
#include "engine/model/safetensors.h"
#include "engine/runtime/model.h"

namespace lensd::testing {

// External reference data (tokenizers, reference models): $LENSD_SHARED_DIR, else ../shared
// beside the checkout; tests skip when it is absent.
std::string SharedDir();
// Our golden models and activations, copied from ../shared/golden into tests/data/golden
// (always present; $LENSD_GOLDEN_DIR overrides, e.g. in the GPU bundle).
std::string GoldenDir();
// tests/data/families: the newer families' models and references
// (tools/reference/make_family_goldens.py), beside GoldenDir().
std::string FamiliesDir();
// The model directory of a test family: FamiliesDir()/family when it is one of those, else
// GoldenDir()/family.
std::string FamilyDir(const std::string& family);
// Test family `family` loaded on the CPU with KV blocks of `block_size` tokens; null (with a
// test failure naming the status) when it does not load.
std::unique_ptr<Model> LoadFamily(const std::string& family, int block_size = 16);
// tests/data/saes/<name>: the reference SAEs (tools/reference/make_sae_references.py).
std::string SaeDir(const std::string& name);
// Skips the calling test (GTEST_SKIP) when `relative` is absent under SharedDir().
#define LENSD_REQUIRE_SHARED(relative)                                              \
  if (!::lensd::testing::SharedExists(relative))                                   \
  GTEST_SKIP() << "shared test data " << relative << " absent (expected under "    \
               << ::lensd::testing::SharedDir() << ")"
bool SharedExists(const std::string& relative);

// float32 copy of a reference tensor.
Buffer ToF32(const TensorInfo& info);
// Whether greedy generation from `prompt` by full recompute semantics gives `expected` (the
// prompt followed by the reference's greedy tokens), stopping at no EOS.
::testing::AssertionResult GreedyIdsAre(Model& model, const std::vector<int32_t>& prompt,
                                        const std::vector<int32_t>& expected);
std::vector<int32_t> ToIds(const TensorInfo& info);
// The input ids of prompt `index` (0: 7 tokens, 1: 19) of family `family`'s reference run
// (FamilyDir/reference.safetensors); empty, with a test failure, when it cannot be read.
std::vector<int32_t> ReferencePrompt(const std::string& family, int index);

// Golden rule: |got - ref| <= tol × max(1, max|ref|) everywhere; -inf exactly where ref is.
::testing::AssertionResult AllClose(const std::string& what, const TensorView& got,
                                    const TensorView& ref, double tol);

// `status` failed with `code` and its message contains `needle`.
::testing::AssertionResult FailsWith(const absl::Status& status, absl::StatusCode code,
                                     const std::string& needle);

// A fresh temporary directory (removed by the OS's tmp cleaning; tests use unique names).
std::string TempDir(const std::string& tag);

// Writes the checkpoint of `from` (config.json + model.safetensors) into `to` as two shards
// with model.safetensors.index.json; returns the file names written.
std::vector<std::string> WriteShardedCheckpoint(const std::string& from, const std::string& to);

}  // namespace lensd::testing

#endif  // LENSD_TESTS_TEST_UTIL_H_
