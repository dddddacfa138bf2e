// TransformerLens weight processing (from_pretrained defaults), applied to host float32
// canonical weights at load time, one layer at a time. Hook names stay the same; values
// change exactly as TransformerLens's do.
#ifndef LENSD_ENGINE_RUNTIME_PROCESSING_H_
#define LENSD_ENGINE_RUNTIME_PROCESSING_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace lensd {

struct ProcessingOptions {
  bool fold_ln = false;                 // norm weights (and LN biases) into the next linear
  bool center_writing_weights = false;  // LayerNorm models only, as in TransformerLens
  bool center_unembed = false;
  bool fold_value_biases = false;
};

// "none" or "transformer-lens".
absl::StatusOr<ProcessingOptions> ParseProcessing(std::string_view name);

void ProcessEmbed(const ModelConfig& c, const ProcessingOptions& o, EmbedWeights& e);
void ProcessLayer(const ModelConfig& c, const ProcessingOptions& o, LayerWeights& w);
void ProcessHead(const ModelConfig& c, const ProcessingOptions& o, HeadWeights& h);

}  // namespace lensd

#endif  // LENSD_ENGINE_RUNTIME_PROCESSING_H_
