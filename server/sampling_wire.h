// Sampling parameters on the wire (v1::SamplingParams) -> the engine's validated
// SamplingParams; shared by the RPC edge and lensd generate (whose flags build the same
// message), so both check the same things once.
#ifndef LENSD_SERVER_SAMPLING_WIRE_H_
#define LENSD_SERVER_SAMPLING_WIRE_H_

#include "absl/status/statusor.h"
#include "engine/runtime/sampler.h"
#include "lensd/v1/lensd.pb.h"

namespace lensd {

// Unset fields keep the engine's defaults; INVALID_ARGUMENT naming "sampling.<field>".
// max_new_tokens is the caller's (its bounds differ between the server and the CLI).
absl::StatusOr<SamplingParams> ToSampling(const v1::SamplingParams& s);

}  // namespace lensd

#endif  // LENSD_SERVER_SAMPLING_WIRE_H_
