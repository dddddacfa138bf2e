// config.json pieces shared by the families' parsers (engine/model/families): ranges, the
// activation names and the rotary fields in both config styles.
#ifndef LENSD_ENGINE_MODEL_CONFIG_PARSE_H_
#define LENSD_ENGINE_MODEL_CONFIG_PARSE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "nlohmann/json.hpp"

namespace lensd {

// Ranges checked as each field is read (before any arithmetic on it); a model outside them is
// implausible and would overflow the size arithmetic of loading.
inline constexpr int64_t kMaxDModel = 1 << 20, kMaxVocab = 1 << 24, kMaxLayers = 4096;
inline constexpr int64_t kMaxDMlp = 1 << 22, kMaxHeads = 4096, kMaxHeadDim = 1 << 14;
inline constexpr int64_t kMaxPositions = 1 << 26;

// Hugging Face activation names ("gelu_new", "silu", ...).
absl::StatusOr<ActKind> ParseAct(const std::string& name);

// The geometry of the rotary families (hidden_size, heads, key/value heads, layers,
// intermediate_size, positions, head_dim), the activation (`default_act` when absent) and
// tie_word_embeddings.
absl::Status ParseRotaryGeometry(const nlohmann::json& j, const char* default_act, ModelConfig& c);

// Rope fields from `rope_parameters` (transformers 5) or top level plus `rope_scaling`
// (classic); rope_parameters wins where present. `default_pct`: the rotary share of d_head.
absl::StatusOr<RopeConfig> ParseRope(const nlohmann::json& j, double default_pct, int d_head);

// A mixture of experts' router: the expert count (`experts_key`, else "num_experts",
// `default_experts` when neither), num_experts_per_tok, and norm_topk_prob (default
// `normalize`). Shared experts are refused by name.
absl::StatusOr<MoeParams> ParseMoe(const nlohmann::json& j, const char* experts_key,
                                   int default_experts, bool normalize);

// Which layers attend through a sliding window: config.json's layer_types
// ("sliding_attention" / "full_attention", one per layer) when present, else `fallback(layer)`
// (the older configs' rule of each family).
absl::StatusOr<std::vector<bool>> ParseSlidingLayers(const nlohmann::json& j, int n_layers,
                                                     bool (*fallback)(const nlohmann::json& j,
                                                                      int layer));

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_CONFIG_PARSE_H_
