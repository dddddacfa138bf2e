// Sparse autoencoders (DESIGN.md "Sparse autoencoders"): SAELens directories loaded once
// beside the model (`--sae NAME=DIR[@HOOK]`) and attached by requests at their hook
// (attachments.h). Attached, an SAE runs inside the batched step on the rows of the sequences
// that attached it and captures SAELens's hook points under its hook (H.hook_sae_input …
// H.hook_sae_output). Its encoder and decoder are Linear matrices on every device that runs
// the hook, in the model's weight dtype; normalisation and the activation run on host rows.
#ifndef LENSD_ENGINE_RUNTIME_SAE_H_
#define LENSD_ENGINE_RUNTIME_SAE_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/attachments.h"
#include "engine/runtime/interventions.h"
#include "engine/runtime/model.h"

namespace lensd {

// cfg.json as lensd reads it (SAELens 6 `SAEConfig.to_dict`, and the older
// `activation_fn_str` form).
struct SaeSpec {
  enum class Kind { kStandard, kJumpRelu, kTopK };
  // SAELens's run-time activation normalisation ("expected_average_only_in" is none at run
  // time: SAELens folds its factor into the weights when it knows it).
  enum class Norm { kNone, kConstantNormRescale, kLayerNorm };
  std::string name, dir;
  HookId site{HookPoint::kResidPost, 0};
  Kind kind = Kind::kStandard;
  int64_t d_in = 0, d_sae = 0;
  int k = 0;                                  // kTopK: features kept per position
  bool rescale_acts_by_decoder_norm = false;  // kTopK
  bool apply_b_dec_to_input = true;
  Norm norm = Norm::kNone;
};
const char* SaeKindName(SaeSpec::Kind kind);  // "standard", "jumprelu", "topk"

// An edit of an attached SAE's feature activations (an intervention at H.hook_sae_acts_post
// with `features`): after the activation, before the decoder, on the selected positions of
// the selected prompts.
struct FeatureEdit {
  enum class Op { kZero, kScale, kSet, kAdd };
  Op op = Op::kZero;
  std::vector<int> features;  // in [0, d_sae)
  // One per feature: kScale the factor, kSet the value, kAdd coeff · value; kZero none.
  std::vector<float> values;
  // Per prompt of the request: its edited positions; nullopt: the prompt is not edited.
  std::vector<std::optional<Selection>> positions;
};

class Sae : public std::enable_shared_from_this<Sae> {
 public:
  // `arg`: NAME=DIR, or NAME=DIR@HOOK where HOOK overrides cfg.json's hook. Reads DIR/cfg.json
  // and DIR/sae_weights.safetensors; errors name the file and the field (unknown
  // architecture, d_in not the hook's width, a hook the model lacks, shapes, non-finite
  // weights).
  static absl::StatusOr<std::shared_ptr<const Sae>> Load(const Model& model, std::string_view arg);

  const SaeSpec& spec() const { return spec_; }
  int64_t device_bytes() const { return device_bytes_; }  // on each device holding it
  // This SAE as an attachment at its hook: the hook's value flows on unchanged (SAELens's
  // error term kept: output = reconstruction + error), or, with `splice`, replaced by the
  // reconstruction; `edits` (validated for this SAE) change feature activations first, and
  // the output of an edited position is the edited reconstruction (+ the clean error).
  std::shared_ptr<const HookAttachment> Attach(bool splice,
                                               std::vector<FeatureEdit> edits = {}) const;

 private:
  class Attachment;
  // The encoder [d_sae, d_in] and decoder [d_in, d_sae] as Linear takes them, with biases.
  struct DeviceWeights {
    Buffer w_enc, b_enc, w_dec, b_dec;
  };
  // Host copies: the encoder's input shift, JumpReLU thresholds, decoder row norms (TopK
  // rescaling), the decoder [d_sae, d_in] for rows with few active features.
  struct HostWeights {
    std::vector<float> b_dec, threshold, decoder_norm, w_dec;
  };
  absl::Status Upload(const Model& model, const std::vector<float>& w_enc,
                      const std::vector<float>& b_enc, const std::vector<float>& w_dec);

  SaeSpec spec_;
  HostWeights host_;
  std::map<const Backend*, DeviceWeights> devices_;
  int64_t device_bytes_ = 0;
};

// The SAEs a server or command loaded, by name.
using SaeSet = std::map<std::string, std::shared_ptr<const Sae>>;
// Loads every `--sae` argument; a name used twice is an error.
absl::StatusOr<SaeSet> LoadSaes(const Model& model, const std::vector<std::string>& args);
// The SAE named `name`; INVALID_ARGUMENT listing the loaded names if none.
absl::StatusOr<std::shared_ptr<const Sae>> FindSae(const SaeSet& saes, std::string_view name);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_SAE_H_
