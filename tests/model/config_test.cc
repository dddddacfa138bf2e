#include "engine/model/config.h"

#include <gtest/gtest.h>

#include <cmath>

namespace lensd {
namespace {

TEST(Config, ClassicLlama31WithRopeScaling) {
  auto c = ParseModelConfig(R"({"model_type":"llama","hidden_size":4096,"num_attention_heads":32,
    "num_key_value_heads":8,"num_hidden_layers":32,"intermediate_size":14336,"vocab_size":128256,
    "max_position_embeddings":131072,"rms_norm_eps":1e-5,"rope_theta":500000.0,
    "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
    "original_max_position_embeddings":8192,"rope_type":"llama3"},"torch_dtype":"bfloat16",
    "bos_token_id":128000,"eos_token_id":[128001,128008,128009]})", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layers[0].rope.type, RopeType::kLlama3);
  EXPECT_EQ(c->layers[0].rope.theta, 500000.0);
  EXPECT_EQ(c->layers[0].rope.factor, 8.0);
  EXPECT_EQ(c->d_head, 128);
  EXPECT_EQ(c->n_kv_heads, 8);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(c->eos_ids.size(), 3u);
}

TEST(Config, Transformers5StyleRopeParameters) {
  auto c = ParseModelConfig(R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,
    "num_hidden_layers":2,"intermediate_size":128,"vocab_size":100,"dtype":"float16",
    "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":32.0,
    "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}})", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layers[0].rope.type, RopeType::kLlama3);
  EXPECT_EQ(c->layers[0].rope.factor, 32.0);
  EXPECT_EQ(c->layers[0].rope.theta, 500000.0);
  EXPECT_EQ(c->dtype, DType::kF16);
}

// Phi-3.5's classic form (type "longrope", the pretraining length at top level; Phi-3's older
// "su" alike): the attention factor from max / original positions; errors name the field.
TEST(Config, Phi3LongropeDefaultsAndErrors) {
  const std::string head = R"({"model_type":"phi3","hidden_size":64,"num_attention_heads":4,
    "num_hidden_layers":2,"intermediate_size":128,"vocab_size":100,
    "max_position_embeddings":131072,"original_max_position_embeddings":4096,)";
  auto c = ParseModelConfig(head + R"("rope_scaling":{"type":"su",
    "short_factor":[1,1,1,1,1,1,1,1],"long_factor":[1,2,3,4,5,6,7,8]}})",
                            "t");
  ASSERT_TRUE(c.ok()) << c.status();
  const RopeConfig& r = c->layers[1].rope;
  EXPECT_EQ(r.type, RopeType::kLongRope);
  EXPECT_EQ(r.original_max_position, 4096);
  EXPECT_DOUBLE_EQ(r.factor, 32.0);
  EXPECT_DOUBLE_EQ(r.attention_factor, std::sqrt(1 + std::log(32.0) / std::log(4096.0)));
  EXPECT_EQ(r.long_factor.back(), 8.0);
  EXPECT_EQ(RopeSwitch(*c), 4096);
  auto given = ParseModelConfig(head + R"("rope_scaling":{"rope_type":"longrope",
    "attention_factor":1.5,"short_factor":[1,1,1,1,1,1,1,1],"long_factor":[1,1,1,1,1,1,1,1]}})",
                                "t");
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(given->layers[0].rope.attention_factor, 1.5);
  auto short_list = ParseModelConfig(head + R"("rope_scaling":{"type":"longrope",
    "short_factor":[1,1],"long_factor":[1,1,1,1,1,1,1,1]}})",
                                     "t");
  EXPECT_NE(short_list.status().message().find("short_factor must be a list of rotary_dim / 2 = 8"),
            std::string::npos)
      << short_list.status();
  auto no_original = ParseModelConfig(R"({"model_type":"phi3","hidden_size":64,
    "num_attention_heads":4,"num_hidden_layers":2,"intermediate_size":128,"vocab_size":100,
    "rope_scaling":{"type":"longrope","short_factor":[1,1,1,1,1,1,1,1],
    "long_factor":[1,1,1,1,1,1,1,1]}})",
                                      "t");
  EXPECT_NE(no_original.status().message().find("original_max_position_embeddings"),
            std::string::npos)
      << no_original.status();
  auto plain = ParseModelConfig(head + R"("rope_theta":10000})", "t");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(RopeSwitch(*plain), 0);
}

// Qwen3-MoE's dense layers: every decoder_sparse_step-th layer is a mixture unless listed in
// mlp_only_layers; experts of moe_intermediate_size, dense MLPs of intermediate_size.
TEST(Config, Qwen3MoeDenseLayers) {
  const std::string head = R"({"model_type":"qwen3_moe","hidden_size":64,"num_attention_heads":4,
    "num_hidden_layers":6,"intermediate_size":128,"moe_intermediate_size":32,"vocab_size":100,
    "num_experts":4,"num_experts_per_tok":2,"decoder_sparse_step":2,)";
  auto c = ParseModelConfig(head + R"("mlp_only_layers":[3]})", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<bool> moe;
  for (const LayerSpec& l : c->layers) moe.push_back(l.mlp == MlpKind::kMoe);
  EXPECT_EQ(moe, (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_EQ(c->layers[1].moe.d_expert, 32);
  EXPECT_EQ(c->d_mlp, 128);
  EXPECT_EQ(c->layers[0].mlp, MlpKind::kGated);
  auto bad = ParseModelConfig(head + R"("mlp_only_layers":[6]})", "t");
  EXPECT_NE(bad.status().message().find("mlp_only_layers[0] must be a layer index below 6"),
            std::string::npos)
      << bad.status();
}

TEST(Config, NeoxClassicRotaryPctAndMistralWindow) {
  auto neox = ParseModelConfig(R"({"model_type":"gpt_neox","hidden_size":512,"num_attention_heads":8,
    "num_hidden_layers":6,"intermediate_size":2048,"vocab_size":50304,"rotary_pct":0.25,
    "rotary_emb_base":10000,"use_parallel_residual":true})", "t");
  ASSERT_TRUE(neox.ok()) << neox.status();
  EXPECT_EQ(neox->layers[0].rope.rotary_dim, 16);
  EXPECT_TRUE(neox->layers[0].parallel_residual);
  EXPECT_EQ(neox->layers.size(), static_cast<size_t>(neox->n_layers));
  EXPECT_EQ(neox->norm, NormKind::kLayerNorm);
  auto mistral = ParseModelConfig(R"({"model_type":"mistral","hidden_size":64,"num_attention_heads":4,
    "num_key_value_heads":2,"num_hidden_layers":2,"intermediate_size":128,"vocab_size":100,
    "sliding_window":4})", "t");
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_EQ(mistral->layers[0].attention.window, 4);
  EXPECT_EQ(mistral->layers.back().attention.window, 4);
}

TEST(Config, ClearErrors) {
  auto arch = ParseModelConfig(R"({"model_type":"mamba"})", "dir/config.json");
  EXPECT_EQ(arch.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(arch.status().message().find("dir/config.json"), std::string::npos);
  EXPECT_NE(arch.status().message().find("mamba"), std::string::npos);
  EXPECT_FALSE(ParseModelConfig("{not json", "x").ok());
  auto type = ParseModelConfig(R"({"model_type":"llama","hidden_size":"big"})", "x");
  EXPECT_NE(type.status().message().find("hidden_size"), std::string::npos);
  EXPECT_FALSE(ParseModelConfig(R"({"model_type":"llama","hidden_size":64,"num_attention_heads":3,
    "num_hidden_layers":1,"intermediate_size":8,"vocab_size":10})", "x").ok());
  EXPECT_FALSE(ParseModelConfig(R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,
    "num_hidden_layers":1,"intermediate_size":8,"vocab_size":10,
    "rope_scaling":{"rope_type":"yarn","factor":4}})", "x").ok());
}

// D4/D5 of the hardening audit: values that overflowed or divided by zero before they were
// range-checked. Each must be an error naming the file and the field, never a signal.
TEST(Config, HostileNumbersAreErrorsNamingTheField) {
  const std::string gpt2 = R"({"model_type":"gpt2","vocab_size":10,)";
  const std::string llama = R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,
    "num_hidden_layers":1,"intermediate_size":8,"vocab_size":10,)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {gpt2 + R"("n_head":4294967296})", "n_head"},
      {gpt2 + R"("n_head":0})", "n_head"},
      {gpt2 + R"("n_embd":4611686018427387904})", "n_embd"},
      {gpt2 + R"("n_embd":18446744073709551615})", "n_embd"},
      {gpt2 + R"("n_layer":1e300})", "n_layer"},
      {gpt2 + R"("n_layer":-1e300})", "n_layer"},
      {gpt2 + R"("n_positions":-5})", "n_positions"},
      {gpt2 + R"("bos_token_id":1e300})", "bos_token_id"},
      {gpt2 + R"("eos_token_id":[1, 1e300]})", "eos_token_id"},
      {llama + R"("partial_rotary_factor":1e300})", "partial_rotary_factor"},
      {llama + R"("partial_rotary_factor":-1})", "partial_rotary_factor"},
      {llama + R"("num_key_value_heads":0})", "num_key_value_heads"},
      {llama + R"("head_dim":1e300})", "head_dim"},
      {llama + R"("sliding_window":1e19})", "sliding_window"},
      {R"({"model_type":"llama","hidden_size":64,"num_attention_heads":0,"num_hidden_layers":1,
         "intermediate_size":8,"vocab_size":10})", "num_attention_heads"},
  };
  for (const auto& [text, field] : cases) {
    auto c = ParseModelConfig(text, "dir/config.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(c.status().message().find("dir/config.json"), std::string::npos) << c.status();
    EXPECT_NE(c.status().message().find(field), std::string::npos) << c.status();
  }
}

}  // namespace
}  // namespace lensd
