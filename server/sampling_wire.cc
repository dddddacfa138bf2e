#include "server/sampling_wire.h"

#include "absl/strings/str_cat.h"

namespace lensd {

absl::StatusOr<SamplingParams> ToSampling(const v1::SamplingParams& s) {
  SamplingParams p;
  if (s.has_temperature()) p.temperature = s.temperature();
  if (s.has_top_k()) p.top_k = s.top_k();
  if (s.has_top_p()) p.top_p = s.top_p();
  if (s.has_min_p()) p.min_p = s.min_p();
  if (s.has_repetition_penalty()) p.repetition_penalty = s.repetition_penalty();
  if (s.has_frequency_penalty()) p.frequency_penalty = s.frequency_penalty();
  if (s.has_presence_penalty()) p.presence_penalty = s.presence_penalty();
  if (s.has_seed()) p.seed = s.seed();
  p.stop_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  p.ignore_eos = s.ignore_eos();
  absl::Status st = ValidateSampling(p);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("sampling.", st.message()));
  return p;
}

}  // namespace lensd
