// Every bad request field gets its status code and a message naming the field; good requests
// become the expected domain structs; the wire helpers slice and convert exactly.
#include "server/request_edge.h"

#include "cli/request_flags.h"
#include "server/request_wire.h"
#include "server/sinks.h"
#include "server/wire.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

class EdgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = *Model::Load(LoadOptions{});
    facts_ = {&model_->config(), model_->tokenizer(), DType::kF32, /*kv_tokens=*/128, 0, {}};
    limits_.max_prompt_tokens = 64;
    limits_.max_new_tokens = 100;
    limits_.max_capture_bytes = 1 << 20;
  }
  v1::GenerateRequest Gen(std::vector<int> ids) {
    v1::GenerateRequest r;
    r.mutable_prompt()->mutable_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
    return r;
  }
  v1::RunWithCacheRequest Cache(std::vector<int> ids) {
    v1::RunWithCacheRequest r;
    r.add_prompts()->mutable_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
    return r;
  }
  // Asserts the code and that the message contains `needle`.
  template <typename T>
  void ExpectError(const absl::StatusOr<T>& got, absl::StatusCode code, const std::string& needle) {
    EXPECT_TRUE(testing::FailsWith(got.status(), code, needle));
  }
  std::unique_ptr<Model> model_;
  ModelFacts facts_;
  ServerLimits limits_;
};

TEST_F(EdgeTest, GenerateRequestErrors) {
  using C = absl::StatusCode;
  ExpectError(ToGenerateJob(v1::GenerateRequest{}, facts_, limits_), C::kInvalidArgument,
              "prompt is empty");
  ExpectError(ToGenerateJob(Gen({}), facts_, limits_), C::kInvalidArgument, "prompt has no tokens");
  ExpectError(ToGenerateJob(Gen({1, 259}), facts_, limits_), C::kInvalidArgument,
              "prompt.tokens.ids[1] = 259 is outside the vocabulary [0, 259)");
  ExpectError(ToGenerateJob(Gen({1, -1}), facts_, limits_), C::kInvalidArgument, "ids[1] = -1");
  ExpectError(ToGenerateJob(Gen(std::vector<int>(65, 5)), facts_, limits_), C::kResourceExhausted,
              "65 tokens; this server accepts at most 64");
  v1::GenerateRequest r = Gen({1, 5});
  r.mutable_sampling()->set_top_p(0);
  ExpectError(ToGenerateJob(r, facts_, limits_), C::kInvalidArgument, "sampling.top_p = 0");
  r.mutable_sampling()->set_top_p(1.5f);
  ExpectError(ToGenerateJob(r, facts_, limits_), C::kInvalidArgument, "must be in (0, 1]");
  r = Gen({1, 5});
  r.mutable_sampling()->set_temperature(-1);
  ExpectError(ToGenerateJob(r, facts_, limits_), C::kInvalidArgument, "sampling.temperature = -1");
  r = Gen({1, 5});
  r.set_max_new_tokens(0);
  ExpectError(ToGenerateJob(r, facts_, limits_), C::kInvalidArgument, "max_new_tokens = 0");
  r.set_max_new_tokens(101);
  ExpectError(ToGenerateJob(r, facts_, limits_), C::kInvalidArgument, "[1, 100]");
  r = Gen(std::vector<int>(60, 5));
  r.set_max_new_tokens(100);
  ExpectError(ToGenerateJob(r, facts_, limits_), C::kResourceExhausted, "160 tokens of KV cache");
  ModelFacts no_tokenizer = facts_;
  no_tokenizer.tokenizer = nullptr;
  v1::GenerateRequest text;
  text.mutable_prompt()->set_text("hi");
  ExpectError(ToGenerateJob(text, no_tokenizer, limits_), C::kFailedPrecondition, "no tokenizer");
}

TEST_F(EdgeTest, GenerateRequestDefaultsAndSampling) {
  v1::GenerateRequest r;
  r.mutable_prompt()->set_text("hi");
  r.mutable_sampling()->set_top_k(5);
  r.mutable_sampling()->add_stop_token_ids(7);
  auto job = ToGenerateJob(r, facts_, limits_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->prompts[0], (std::vector<int32_t>{1, 'h' + 3, 'i' + 3}));
  EXPECT_EQ(job->sampling.max_new_tokens, 16);
  EXPECT_EQ(job->sampling.top_k, 5);
  EXPECT_EQ(job->sampling.top_p, 1.0f);
  EXPECT_EQ(job->sampling.stop_ids, std::vector<int>{7});
}

TEST_F(EdgeTest, CaptureRequestErrors) {
  using C = absl::StatusCode;
  ExpectError(ToCaptureRequest(v1::RunWithCacheRequest{}, facts_, limits_), C::kInvalidArgument,
              "prompts is empty");
  v1::RunWithCacheRequest r = Cache({1, 2, 3});
  r.add_prompts();
  ExpectError(ToCaptureRequest(r, facts_, limits_), C::kInvalidArgument, "prompts[1] is empty");
  r = Cache({1, 2, 3});
  r.add_names_filter("blocks.0.hook_resid_pots");
  ExpectError(ToCaptureRequest(r, facts_, limits_), C::kInvalidArgument,
              "closest valid names: blocks.0.hook_resid_post");
  r = Cache({1, 2, 3});
  r.set_dtype(v1::DTYPE_INT32);
  ExpectError(ToCaptureRequest(r, facts_, limits_), C::kInvalidArgument, "dtype = DTYPE_INT32");
  r.set_dtype(static_cast<v1::DType>(42));
  ExpectError(ToCaptureRequest(r, facts_, limits_), C::kInvalidArgument, "dtype");
  r = Cache({1, 2, 3});
  r.mutable_position_slice()->set_start(5);
  ExpectError(ToCaptureRequest(r, facts_, limits_), C::kInvalidArgument, "selects no position");
  r = Cache(std::vector<int>(64, 9));  // all hooks + logits of 64 tokens: > 1 MiB
  ExpectError(ToCaptureRequest(r, facts_, limits_), C::kResourceExhausted, "bytes; this server allows 1048576");
}

// On a device with an activation budget, a capture prompt runs whole beside max_running decode
// tokens: one that would not fit (here only because it asks for attention maps) is refused.
TEST_F(EdgeTest, CapturePromptMustFitTheActivationBudget) {
  const ModelConfig& c = model_->config();
  ModelFacts gpu = facts_;
  gpu.activation_budget = StepActivationBytes(c, limits_.max_running + 40, 0);
  v1::RunWithCacheRequest r = Cache(std::vector<int>(40, 9));
  r.add_names_filter("blocks.0.hook_resid_post");
  EXPECT_TRUE(ToCaptureRequest(r, gpu, limits_).ok());
  r.add_names_filter("blocks.1.attn.hook_pattern");
  ExpectError(ToCaptureRequest(r, gpu, limits_), absl::StatusCode::kResourceExhausted,
              "prompts[0] (40 tokens, with attention maps) needs about");
  EXPECT_TRUE(ToCaptureRequest(r, facts_, limits_).ok());  // no budget: host memory
  // The bound grows with tokens and with maps.
  EXPECT_GT(StepActivationBytes(c, 200, 0), StepActivationBytes(c, 100, 0));
  EXPECT_GT(StepActivationBytes(c, 100, 100), StepActivationBytes(c, 100, 0));
}

TEST_F(EdgeTest, CaptureManifestCountsEveryByte) {
  const ModelConfig& c = model_->config();
  v1::RunWithCacheRequest r = Cache({1, 2, 3, 4, 5});
  r.add_prompts()->set_text("abc");  // 4 tokens with BOS
  r.add_names_filter("blocks.1-2.attn.hook_pattern");
  r.add_names_filter("hook_embed");
  r.mutable_position_slice()->set_start(-2);
  r.set_dtype(v1::DTYPE_BFLOAT16);
  auto req = ToCaptureRequest(r, facts_, limits_);
  ASSERT_TRUE(req.ok()) << req.status();
  ASSERT_EQ(req->manifest.size(), 8u);  // per prompt: embed, 2 patterns, logits
  EXPECT_EQ(req->manifest[0].shape, Shape({1, 2, c.d_model}));
  EXPECT_EQ(req->manifest[1].shape, Shape({1, c.n_heads, 2, 5}));
  EXPECT_EQ(req->manifest[3].shape, Shape({1, 5, c.vocab_size}));  // logits are never sliced
  EXPECT_EQ(req->manifest[5].shape, Shape({1, c.n_heads, 2, 4}));
  int64_t total = 0;
  for (const auto& t : req->manifest) total += t.shape.NumElements() * 2;
  EXPECT_EQ(req->total_bytes, total);
}

TEST_F(EdgeTest, ObjectiveAddsEachHooksGradientAfterTheLogits) {
  using C = absl::StatusCode;
  const ModelConfig& c = model_->config();
  v1::RunWithCacheRequest r = Cache({1, 2, 3, 4, 5});
  r.add_names_filter("blocks.0.attn.hook_pattern");
  r.add_names_filter("blocks.0.hook_resid_pre");
  r.add_names_filter("blocks.1.hook_resid_post");
  r.mutable_objective()->mutable_loss();
  auto req = ToCaptureRequest(r, facts_, limits_);
  ASSERT_TRUE(req.ok()) << req.status();
  ASSERT_TRUE(req->job.objective.has_value());
  // hooks, logits, then the gradients as the backward reaches them, last layer first.
  ASSERT_EQ(req->manifest.size(), 7u);
  EXPECT_TRUE(req->manifest[3].logits);
  EXPECT_TRUE(req->manifest[4].grad);
  EXPECT_EQ(req->manifest[4].id, (HookId{HookPoint::kResidPost, 1}));
  EXPECT_EQ(req->manifest[5].id, (HookId{HookPoint::kPattern, 0}));
  EXPECT_EQ(req->manifest[5].shape, Shape({1, c.n_heads, 5, 5}));
  EXPECT_EQ(req->manifest[6].id, (HookId{HookPoint::kResidPre, 0}));
  v1::TensorInfo info;
  FillTensorInfo(req->manifest[6], &info);
  EXPECT_EQ(info.name(), "blocks.0.hook_resid_pre_grad");
  EXPECT_EQ(req->manifest[6].shape, Shape({1, 5, c.d_model}));
  // Through interventions where they have gradient rules; refused at norm statistics, and
  // where the model computes no gradients.
  v1::RunWithCacheRequest with_ops = r;
  v1::Intervention* iv = with_ops.add_interventions();
  iv->set_hook("blocks.0.hook_resid_pre");
  iv->mutable_zero();
  EXPECT_TRUE(ToCaptureRequest(with_ops, facts_, limits_).ok());
  iv->set_hook("blocks.0.ln1.hook_scale");
  ExpectError(ToCaptureRequest(with_ops, facts_, limits_), C::kInvalidArgument,
              "interventions[0]: gradients cannot pass zero at blocks.0.ln1.hook_scale");
  ModelFacts none = facts_;
  none.gradients = absl::FailedPreconditionError("gradients through mixtures of experts");
  ExpectError(ToCaptureRequest(r, none, limits_), C::kFailedPrecondition,
              "objective: gradients through mixtures of experts");
  r.mutable_objective()->mutable_logprob();
  ExpectError(ToCaptureRequest(r, facts_, limits_), C::kInvalidArgument,
              "objective.logprob.ids is empty");
}

TEST(Wire, PositionSliceFollowsPython) {
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ((PositionSlice{}.Resolve(7)), P(0, 7));
  EXPECT_EQ((PositionSlice{-3, std::nullopt}.Resolve(7)), P(4, 7));
  EXPECT_EQ((PositionSlice{1, -1}.Resolve(7)), P(1, 6));
  EXPECT_EQ((PositionSlice{10, 20}.Resolve(7)), P(7, 7));
  EXPECT_EQ((PositionSlice{5, 2}.Resolve(7)), P(5, 5));
  EXPECT_EQ((PositionSlice{-100, 3}.Resolve(7)), P(0, 3));
}

TEST(Wire, SliceAndConvertPicksRowsOfTheAxis) {
  // [1, 2, 3, 2]: slice axis 2 rows [1, 3).
  Buffer src = Buffer::Host(DType::kF32, {1, 2, 3, 2});
  for (int i = 0; i < 12; ++i) src.As<float>()[i] = static_cast<float>(i);
  Buffer out = SliceAndConvert(src.view(), 2, {1, 3}, DType::kF32);
  EXPECT_EQ(out.shape(), Shape({1, 2, 2, 2}));
  const std::vector<float> want = {2, 3, 4, 5, 8, 9, 10, 11};
  EXPECT_EQ(std::vector<float>(out.As<float>(), out.As<float>() + 8), want);
  Buffer half = SliceAndConvert(src.view(), 1, {1, 2}, DType::kBF16);
  EXPECT_EQ(half.shape(), Shape({1, 1, 3, 2}));
  EXPECT_EQ(BF16ToF32(half.As<uint16_t>()[0]), 6.0f);
}

TEST(Wire, IncompleteUtf8TailHoldsBackSplitCharacters) {
  EXPECT_EQ(IncompleteUtf8Tail("abc"), 0u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xC3"), 1u);           // first byte of é
  EXPECT_EQ(IncompleteUtf8Tail("a\xC3\xA9"), 0u);       // é complete
  EXPECT_EQ(IncompleteUtf8Tail("\xE2\x82"), 2u);        // 2 of 3 bytes of €
  EXPECT_EQ(IncompleteUtf8Tail("\xF0\x9F\x98"), 3u);    // 3 of 4 bytes of an emoji
  EXPECT_EQ(IncompleteUtf8Tail("\xF0\x9F\x98\x80"), 0u);
  EXPECT_EQ(IncompleteUtf8Tail(""), 0u);
}

TEST(Objective, FlagSyntaxToTheWireAndTheWireToTheEngine) {
  v1::Objective wire;
  ASSERT_TRUE(ObjectiveFromFlag("logit_diff:5,6:7@-1,2", &wire).ok());
  auto o = ToObjective(wire, 100, {4, 6});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->kind, Objective::Kind::kLogitDiff);
  EXPECT_EQ(o->answer, (std::vector<int>{5, 6}));
  EXPECT_EQ(o->wrong, (std::vector<int>{7}));
  EXPECT_EQ(o->positions, (std::vector<int>{-1, 2}));
  for (const char* flag : {"loss", "logprob:3", "logprob:3,4@0"}) {
    v1::Objective w;
    ASSERT_TRUE(ObjectiveFromFlag(flag, &w).ok()) << flag;
    EXPECT_TRUE(ToObjective(w, 100, {4}).ok()) << flag;
  }
  for (const char* bad : {"", "lose", "logit_diff:5", "logprob:x", "logprob:", "logit_diff:1:2@a"}) {
    v1::Objective w;
    EXPECT_EQ(ObjectiveFromFlag(bad, &w).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  // What only the model and the prompts tell.
  for (const auto& [flag, lengths, message] :
       std::vector<std::tuple<std::string, std::vector<int>, std::string>>{
           {"logprob:100", {4}, "objective.logprob.ids[0] = 100 is outside the vocabulary"},
           {"logit_diff:1:2@4", {4}, "objective.positions[0] = 4 is outside prompts[0]"},
           {"logit_diff:1:2@-5", {6, 4}, "is outside prompts[1] (4 tokens)"},
           {"loss", {3, 1}, "prompts of at least 2 tokens; prompts[1]"},
           {"loss@1", {3}, "objective.positions: the loss covers every position"}}) {
    v1::Objective w;
    ASSERT_TRUE(ObjectiveFromFlag(flag, &w).ok()) << flag;
    auto got = ToObjective(w, 100, lengths);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << flag;
    EXPECT_NE(got.status().message().find(message), std::string::npos) << got.status();
  }
  EXPECT_EQ(ToObjective(v1::Objective(), 100, {3}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lensd
