#include "engine/model/hub_cache.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace lensd {
namespace {

namespace fs = std::filesystem;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

bool IsDirectory(const std::string& path) {
  std::error_code e;
  return fs::is_directory(path, e);
}

// "org/name" or "name", each part of [A-Za-z0-9._-] not starting with '.' or '-' (the Hub's
// rule), then an optional "@revision" (a branch, tag or commit hash).
bool ParseHubId(const std::string& spec, std::string* repo, std::string* revision) {
  static const std::regex kId(R"(^((?:[A-Za-z0-9_][A-Za-z0-9._-]*/)?[A-Za-z0-9_][A-Za-z0-9._-]*)(?:@([A-Za-z0-9._/-]+))?$)");
  std::smatch m;
  if (!std::regex_match(spec, m, kId)) return false;
  *repo = m[1];
  *revision = m[2].matched ? std::string(m[2]) : "main";
  return revision->find("..") == std::string::npos;
}

// The commit a revision names in one repo folder: refs/<revision>, else the revision itself
// when it is a snapshot folder (a commit hash); "" when neither.
std::string SnapshotOf(const std::string& repo_dir, const std::string& revision) {
  std::ifstream ref(repo_dir + "/refs/" + revision);
  std::string commit;
  if (ref && std::getline(ref, commit)) {
    commit = std::string(absl::StripAsciiWhitespace(commit));
    if (!commit.empty() && IsDirectory(repo_dir + "/snapshots/" + commit)) {
      return repo_dir + "/snapshots/" + commit;
    }
  }
  if (IsDirectory(repo_dir + "/snapshots/" + revision)) return repo_dir + "/snapshots/" + revision;
  return "";
}

}  // namespace

HubEnvironment HubEnvironment::FromProcess() {
  return {Env("HF_HUB_CACHE"), Env("HF_HOME"), Env("XDG_CACHE_HOME"), Env("HOME")};
}

std::vector<std::string> HubEnvironment::CacheDirs() const {
  if (!hf_hub_cache.empty()) return {hf_hub_cache};
  if (!hf_home.empty()) return {hf_home + "/hub"};
  if (!xdg_cache_home.empty()) return {xdg_cache_home + "/huggingface/hub"};
  if (!home.empty()) return {home + "/.cache/huggingface/hub"};
  return {};
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& spec, const HubEnvironment& env) {
  if (spec.empty() || absl::StartsWith(spec, "builtin:") || IsDirectory(spec)) return spec;
  std::string repo, revision;
  if (!ParseHubId(spec, &repo, &revision)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--model '", spec, "': no such directory, and not a Hugging Face Hub id (org/name[@revision])"));
  }
  std::string folder = "models--" + repo;
  for (size_t i; (i = folder.find('/')) != std::string::npos;) folder.replace(i, 1, "--");
  std::vector<std::string> searched;
  for (const std::string& cache : env.CacheDirs()) {
    const std::string repo_dir = cache + "/" + folder;
    const std::string snapshot = SnapshotOf(repo_dir, revision);
    if (!snapshot.empty()) return snapshot;
    searched.push_back(absl::StrCat(repo_dir, " (refs/", revision, ")"));
  }
  return absl::NotFoundError(absl::StrCat(
      "--model '", spec, "' is not a directory, and revision '", revision, "' of ", repo,
      " is not in the local Hugging Face cache; searched: ",
      searched.empty() ? "nothing (set HF_HUB_CACHE, HF_HOME or HOME)" : absl::StrJoin(searched, ", "),
      ". lensd never downloads: fetch it first (huggingface-cli download ", repo, ")"));
}

}  // namespace lensd
