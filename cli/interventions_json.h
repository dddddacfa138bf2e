// The CLIs' --interventions FILE.json (DESIGN.md): a JSON list of objects with exactly the
// fields of DESIGN.md's intervention table plus "op". Values are JSON numbers or (nested)
// arrays, or {"file": "x.safetensors", "tensor": "name"}, read here (paths relative to the
// JSON file's folder), never by the server. Positions and keys are a list of indices,
// {"start": a, "stop": b}, or "all" / "prompt" / "generated".
#ifndef LENSD_CLI_INTERVENTIONS_JSON_H_
#define LENSD_CLI_INTERVENTIONS_JSON_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "lensd/v1/lensd.pb.h"

namespace lensd {

using WireInterventions = google::protobuf::RepeatedPtrField<v1::Intervention>;

// INVALID_ARGUMENT naming "interventions[i].<field>" for anything malformed or unknown.
absl::Status ParseInterventionsJson(std::string_view text, const std::string& base_dir,
                                    WireInterventions* out);
absl::Status ReadInterventionsFile(const std::string& path, WireInterventions* out);

// Tensor `name` of the safetensors file `path` as a wire tensor (floating point only); errors
// name `field`.
absl::Status TensorFromSafetensors(const std::string& path, const std::string& name,
                                   const std::string& field, v1::Tensor* out);

}  // namespace lensd

#endif  // LENSD_CLI_INTERVENTIONS_JSON_H_
