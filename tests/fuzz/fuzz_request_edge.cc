// libFuzzer target: protobuf bytes as they arrive on the wire, through the RPC edge's
// validation (RunWithCacheRequest or GenerateRequest, chosen by the first byte) against the
// built-in model: every request is accepted into a job or refused with a status.
#include <cstddef>
#include <cstdint>

#include "engine/model/weights.h"
#include "server/request_edge.h"

namespace {

const lensd::ModelFacts& Facts() {
  static const lensd::ModelConfig* config = new lensd::ModelConfig(lensd::BuiltinConfig());
  static const std::unique_ptr<lensd::Tokenizer>* tokenizer =
      new std::unique_ptr<lensd::Tokenizer>(lensd::MakeByteTokenizer());
  static const lensd::ModelFacts* facts =
      new lensd::ModelFacts{config, tokenizer->get(), lensd::DType::kF32, 4096, 0, {}};
  return *facts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  lensd::ServerLimits limits;
  limits.max_capture_bytes = int64_t{64} << 20;
  if (data[0] & 1) {
    lensd::v1::RunWithCacheRequest request;
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    (void)lensd::ToCaptureRequest(request, Facts(), limits).ok();
  } else {
    lensd::v1::GenerateRequest request;
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    (void)lensd::ToGenerateJob(request, Facts(), limits).ok();
  }
  return 0;
}
