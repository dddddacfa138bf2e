#include "server/request_wire.h"

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "server/interventions_wire.h"

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

absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, int vocab,
                           const std::string& field) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, "[", i, "] = ", ids[i], " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status TokenIdList(const google::protobuf::RepeatedField<int32_t>& ids, int vocab,
                         const std::string& field, std::vector<int>& out) {
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  RETURN_IF_ERROR(CheckTokenIds(ids, vocab, field));
  out.assign(ids.begin(), ids.end());
  return absl::OkStatus();
}

namespace {

// o.positions into out.positions, each inside every prompt.
absl::Status ToPositions(const v1::Objective& o, const std::vector<int>& prompt_lengths,
                         Objective& out) {
  for (int k = 0; k < o.positions_size(); ++k) {
    for (size_t p = 0; p < prompt_lengths.size(); ++p) {
      const int P = prompt_lengths[p], pos = o.positions(k);
      if (pos >= P || pos < -P) {
        return absl::InvalidArgumentError(absl::StrCat("objective.positions[", k, "] = ", pos,
                                                       " is outside prompts[", p, "] (", P,
                                                       " tokens)"));
      }
    }
    out.positions.push_back(o.positions(k));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Objective> ToObjective(const v1::Objective& o, int vocab,
                                      const std::vector<int>& prompt_lengths) {
  Objective out;
  switch (o.kind_case()) {
    case v1::Objective::kLoss:
      out.kind = Objective::Kind::kLoss;
      if (!o.positions().empty()) {
        return absl::InvalidArgumentError("objective.positions: the loss covers every position");
      }
      for (size_t p = 0; p < prompt_lengths.size(); ++p) {
        if (prompt_lengths[p] < 2) {
          return absl::InvalidArgumentError(absl::StrCat(
              "objective.loss needs prompts of at least 2 tokens; prompts[", p, "] has 1"));
        }
      }
      return out;
    case v1::Objective::kLogitDiff:
      out.kind = Objective::Kind::kLogitDiff;
      RETURN_IF_ERROR(TokenIdList(o.logit_diff().answer_ids(), vocab,
                                  "objective.logit_diff.answer_ids", out.answer));
      RETURN_IF_ERROR(TokenIdList(o.logit_diff().wrong_ids(), vocab,
                                  "objective.logit_diff.wrong_ids", out.wrong));
      break;
    case v1::Objective::kLogprob:
      out.kind = Objective::Kind::kLogProb;
      RETURN_IF_ERROR(TokenIdList(o.logprob().ids(), vocab, "objective.logprob.ids", out.answer));
      break;
    case v1::Objective::kHookDot:
      return absl::InvalidArgumentError("objective.hook_dot needs the model (internal)");
    case v1::Objective::KIND_NOT_SET:
      return absl::InvalidArgumentError(
          "objective is empty: set loss, logit_diff, logprob or hook_dot");
  }
  RETURN_IF_ERROR(ToPositions(o, prompt_lengths, out));
  return out;
}

absl::StatusOr<Objective> ToObjective(const v1::Objective& o, const ModelConfig& c,
                                      const std::vector<int>& prompt_lengths) {
  if (!o.has_hook_dot()) return ToObjective(o, c.vocab_size, prompt_lengths);
  Objective out;
  out.kind = Objective::Kind::kHookDot;
  RETURN_IF_ERROR(ToPositions(o, prompt_lengths, out));
  absl::StatusOr<HookId> hook = HookFromName(c, o.hook_dot().hook());
  if (!hook.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("objective.hook_dot.hook: ", hook.status().message()));
  }
  out.hook = *hook;
  ASSIGN_OR_RETURN(FloatTensor direction,
                   ToFloatTensor(o.hook_dot().direction(), "objective.hook_dot.direction"));
  out.direction = std::move(direction.data);
  RETURN_IF_ERROR(CheckObjective(c, out));
  return out;
}

}  // namespace lensd
