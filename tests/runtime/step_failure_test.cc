// A step whose backend fails part-way (device memory exhausted: Backend::TakeError) returns
// that error from Forward, and the model stays usable: the next steps give the results of a
// model that never failed, on one device and on pipelined stages.
#include <cstring>

#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/failing_backend.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

class StepFailure : public ::testing::TestWithParam<std::string> {};

TEST_P(StepFailure, FailsTheStepAndTheModelGoesOn) {
  auto fail_in = std::make_shared<std::atomic<int>>(0);
  LoadOptions o;
  o.devices = GetParam();
  o.kv_tokens = 256;
  o.wrap_backend = testing::FailingBackend::Wrapper(fail_in);
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  LoadOptions plain_options = o;
  plain_options.wrap_backend = nullptr;
  auto plain = Model::Load(plain_options);
  ASSERT_TRUE(plain.ok()) << plain.status();

  const std::vector<int32_t> a = {5, 6, 7, 8, 9, 10, 11}, b = {40, 3, 2};
  auto run = [](Model& m, std::vector<int32_t>& ta, std::vector<int32_t>& tb,
                const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    return m.Forward({{a, 0, &ta, true}, {b, 0, &tb, true}}, nullptr);
  };
  std::vector<int32_t> pa, pb;
  ASSERT_TRUE((*plain)->blocks().Reserve(pa, 8) && (*plain)->blocks().Reserve(pb, 8));
  auto want = run(**plain, pa, pb, a, b);
  ASSERT_TRUE(want.ok()) << want.status();

  std::vector<int32_t> ta, tb;
  ASSERT_TRUE((*model)->blocks().Reserve(ta, 8) && (*model)->blocks().Reserve(tb, 8));
  for (int at : {1, 2, 5, 12}) {  // the first allocation of a step, and later ones
    fail_in->store(at);
    auto failed = run(**model, ta, tb, a, b);
    ASSERT_FALSE(failed.ok()) << "allocation " << at;
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted) << failed.status();
    EXPECT_NE(failed.status().message().find("out of device memory"), std::string::npos);
    fail_in->store(0);
    auto again = run(**model, ta, tb, a, b);
    ASSERT_TRUE(again.ok()) << again.status();
    ASSERT_EQ(again->logits.NumBytes(), want->logits.NumBytes());
    EXPECT_EQ(0, std::memcmp(again->logits.As<float>(), want->logits.As<float>(),
                             want->logits.NumBytes()))
        << "after a failure at allocation " << at;
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, StepFailure, ::testing::Values("cpu", "cpu:0,cpu:1"),
                         [](const auto& info) { return info.param == "cpu" ? "One" : "Pipelined"; });

// A decode step whose CUDA graph recording fails (an invalidated capture, a cuBLASLt error while
// recording) runs again normally: generation gives the tokens of a model without graphs.
TEST(StepFailure, AFailedGraphCaptureRunsTheStepAgainNormally) {
  auto captures = std::make_shared<std::atomic<int>>(0);
  LoadOptions o;
  o.devices = "cpu";
  o.kv_tokens = 256;
  o.cuda_graphs = true;
  o.wrap_backend = testing::FailingBackend::CaptureFailing(captures);
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  o.cuda_graphs = false;
  o.wrap_backend = nullptr;
  auto plain = Model::Load(o);
  ASSERT_TRUE(plain.ok()) << plain.status();
  SamplingParams sp;
  sp.max_new_tokens = 8, sp.ignore_eos = true;
  auto got = Generate(**model, {5, 6, 7}, sp);
  auto want = Generate(**plain, {5, 6, 7}, sp);
  ASSERT_TRUE(got.ok() && want.ok()) << got.status() << want.status();
  EXPECT_EQ(got->tokens, want->tokens);
  EXPECT_EQ(captures->load(), 7);  // every decode step tried a graph (not the prefill)
  EXPECT_EQ((*model)->blocks().num_free(), (*model)->blocks().num_blocks());
}

}  // namespace
}  // namespace lensd
