// lensctl sweep: a PatchSweep written as CSV (layer,position,head,value; -1 = all at once),
// the baselines in comment lines.
#include <algorithm>
#include <fstream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/request_flags.h"
#include "client/lensctl/commands.h"
#include "engine/core/status.h"
#include "lensd/v1/lensd.grpc.pb.h"

namespace lensd {
namespace {

absl::StatusOr<v1::Prompt> SweepPrompt(const Flags& flags, const std::string& name) {
  v1::Prompt p;
  if (flags.Has(name) == flags.Has(name + "-ids")) {
    return absl::InvalidArgumentError(absl::StrCat("give exactly one of --", name, " or --", name, "-ids"));
  }
  if (flags.Has(name)) {
    p.set_text(flags.Get(name));
  } else {
    ASSIGN_OR_RETURN(std::vector<int> ids, flags.GetIntList(name + "-ids"));
    p.mutable_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
  }
  return p;
}

absl::StatusOr<v1::SweepComponent> Component(const std::string& name) {
  static const auto* components = new std::map<std::string, v1::SweepComponent>{
      {"resid_pre", v1::COMPONENT_RESID_PRE}, {"resid_mid", v1::COMPONENT_RESID_MID},
      {"resid_post", v1::COMPONENT_RESID_POST}, {"attn_out", v1::COMPONENT_ATTN_OUT},
      {"mlp_out", v1::COMPONENT_MLP_OUT}, {"z", v1::COMPONENT_Z}, {"q", v1::COMPONENT_Q},
      {"k", v1::COMPONENT_K}, {"v", v1::COMPONENT_V}, {"pattern", v1::COMPONENT_PATTERN}};
  auto it = components->find(name);
  if (it == components->end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--component '", name, "': one of resid_pre, resid_mid, resid_post, attn_out, mlp_out, "
        "z, q, k, v, pattern"));
  }
  return it->second;
}

// logit_diff:ANSWER:WRONG, logprob:ID[,ID...], kl (ids comma-separated).
absl::Status ParseMetric(const std::string& spec, v1::SweepMetric* m) {
  std::vector<std::string> parts = absl::StrSplit(spec, ':');
  if (parts[0] == "logit_diff" && parts.size() == 3) {
    RETURN_IF_ERROR(IdsFromFlag("metric", parts[1], m->mutable_logit_diff()->mutable_answer_ids()));
    return IdsFromFlag("metric", parts[2], m->mutable_logit_diff()->mutable_wrong_ids());
  }
  if (parts[0] == "logprob" && parts.size() == 2) {
    return IdsFromFlag("metric", parts[1], m->mutable_logprob()->mutable_ids());
  }
  if (parts[0] == "kl" && parts.size() == 1) return m->mutable_kl(), absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--metric '", spec, "': logit_diff:ANSWER:WRONG, logprob:ID[,ID...] or kl"));
}

absl::StatusOr<v1::PatchSweepRequest> SweepRequest(const Flags& flags) {
  v1::PatchSweepRequest r;
  ASSIGN_OR_RETURN(*r.mutable_clean(), SweepPrompt(flags, "clean"));
  ASSIGN_OR_RETURN(*r.mutable_corrupted(), SweepPrompt(flags, "corrupted"));
  ASSIGN_OR_RETURN(v1::SweepComponent component, Component(flags.Get("component")));
  r.set_component(component);
  if (flags.Has("layers")) {  // START:STOP
    std::vector<std::string> ends = absl::StrSplit(flags.Get("layers"), ':');
    int v;
    if (ends.size() != 2) return absl::InvalidArgumentError("--layers takes START:STOP");
    if (!ends[0].empty() && absl::SimpleAtoi(ends[0], &v)) r.mutable_layers()->set_start(v);
    if (!ends[1].empty() && absl::SimpleAtoi(ends[1], &v)) r.mutable_layers()->set_stop(v);
  }
  r.set_all_positions(flags.Get("positions") == "all");
  r.set_all_heads(flags.Get("heads") == "all");
  r.set_noising(flags.Get("direction") == "noising");
  RETURN_IF_ERROR(ParseMetric(flags.Get("metric"), r.mutable_metric()));
  const std::string method = flags.Get("method");
  if (method != "exact" && method != "attribution") {
    return absl::InvalidArgumentError("--method must be exact or attribution");
  }
  r.set_method(method == "exact" ? v1::SWEEP_METHOD_EXACT : v1::SWEEP_METHOD_ATTRIBUTION);
  return r;
}

}  // namespace

absl::Status SweepRemote(const Connection& c, const Flags& flags, std::ostream& out) {
  if (!flags.Has("out")) return absl::InvalidArgumentError("--out FILE.csv is required");
  ASSIGN_OR_RETURN(v1::PatchSweepRequest request, SweepRequest(flags));
  auto stub = v1::Lensd::NewStub(c.channel);
  auto ctx = c.NewContext();
  auto reader = stub->PatchSweep(ctx.get(), request);
  v1::PatchSweepMessage m;
  v1::SweepHeader header;
  std::vector<v1::SweepCell> cells;
  while (reader->Read(&m)) {
    if (m.has_header()) header = m.header();
    if (m.has_cell()) cells.push_back(m.cell());
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  std::sort(cells.begin(), cells.end(),
            [](const auto& a, const auto& b) { return a.index() < b.index(); });
  std::ofstream csv(flags.Get("out"));
  csv << "# component " << header.component_hook() << "\n# clean_metric "
      << header.clean_metric() << "\n# corrupted_metric " << header.corrupted_metric() << "\n"
      << "layer,position,head,value\n";
  csv.precision(17);
  for (const v1::SweepCell& cell : cells) {
    csv << cell.layer() << "," << cell.position() << "," << cell.head() << "," << cell.value() << "\n";
  }
  if (!csv) return absl::DataLossError(absl::StrCat("cannot write ", flags.Get("out")));
  out << "wrote " << cells.size() << " cells to " << flags.Get("out") << "\n";
  return absl::OkStatus();
}

}  // namespace lensd
