// --model as a Hugging Face Hub id ("org/name", optionally "@revision"), resolved offline in
// the local Hugging Face cache: <cache>/models--org--name/refs/<revision> holds a commit
// hash, whose files are in snapshots/<hash>/ (symlinks into blobs/). Never downloads.
#ifndef LENSD_ENGINE_MODEL_HUB_CACHE_H_
#define LENSD_ENGINE_MODEL_HUB_CACHE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lensd {

// Where the cache may be, as Hugging Face's libraries look for it, first match wins:
// $HF_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, $HOME/.cache/huggingface/hub.
struct HubEnvironment {
  std::string hf_hub_cache, hf_home, xdg_cache_home, home;
  static HubEnvironment FromProcess();
  std::vector<std::string> CacheDirs() const;  // the first set of those (none: empty)
};

// `spec` unchanged when empty, "builtin:..." or an existing directory; else a Hub id resolved
// to its snapshot directory. NotFound names every path searched; InvalidArgument for a spec
// that is neither a directory nor a Hub id.
absl::StatusOr<std::string> ResolveModelDir(const std::string& spec, const HubEnvironment& env);

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_HUB_CACHE_H_
