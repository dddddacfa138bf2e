// --model as a Hugging Face Hub id, resolved in a cache laid out as huggingface_hub writes it
// (refs/ -> snapshots/<commit>/ whose files are symlinks into blobs/, sharded weights): the
// model loads exactly as from its directory; revisions, the environment's precedence and
// every miss.
#include "engine/model/hub_cache.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/runtime/generate.h"
#include "engine/runtime/model.h"
#include "tests/test_util.h"

namespace lensd {
namespace {

namespace fs = std::filesystem;

// <cache>/models--acme--tiny-qwen: revision `ref` -> commit `commit`, files in blobs/.
std::string MakeCachedRepo(const std::string& cache, const std::string& ref, const std::string& commit) {
  const std::string repo = cache + "/models--acme--tiny-qwen";
  const std::string staging = testing::TempDir("hub-staging");
  fs::create_directories(repo + "/blobs");
  fs::create_directories(repo + "/refs");
  fs::create_directories(repo + "/snapshots/" + commit);
  int n = 0;
  for (const std::string& f : testing::WriteShardedCheckpoint(testing::GoldenDir() + "/qwen2", staging)) {
    const std::string blob = "blob" + std::to_string(n++) + commit.substr(0, 4);
    fs::rename(staging + "/" + f, repo + "/blobs/" + blob);
    fs::create_symlink("../../blobs/" + blob, repo + "/snapshots/" + commit + "/" + f);
  }
  std::ofstream(repo + "/refs/" + ref) << commit;  // no newline, as huggingface_hub writes it
  return repo + "/snapshots/" + commit;
}

TEST(HubCache, LoadsAHubIdExactlyAsItsDirectory) {
  const std::string cache = testing::TempDir("hub-cache");
  const std::string snapshot = MakeCachedRepo(cache, "main", std::string(40, 'a'));
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  LoadOptions a, b;
  a.model_dir = testing::GoldenDir() + "/qwen2";
  b.model_dir = "acme/tiny-qwen";
  auto ma = Model::Load(a), mb = Model::Load(b);
  ::unsetenv("HF_HUB_CACHE");
  ASSERT_TRUE(ma.ok() && mb.ok()) << mb.status();
  const std::vector<int32_t> ids = {5, 17, 300, 2, 999};
  auto ra = RunWithCache(**ma, ids, HookSelection::None((*ma)->config()));
  auto rb = RunWithCache(**mb, ids, HookSelection::None((*mb)->config()));
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(0, std::memcmp(ra->logits.As<float>(), rb->logits.As<float>(), ra->logits.NumBytes()));
}

TEST(HubCache, RevisionsAndCommits) {
  const std::string cache = testing::TempDir("hub-revisions");
  const std::string main_dir = MakeCachedRepo(cache, "main", std::string(40, 'b'));
  const std::string v1_dir = MakeCachedRepo(cache, "v1.0", std::string(40, 'c'));
  const HubEnvironment env{cache, "", "", ""};
  EXPECT_EQ(*ResolveModelDir("acme/tiny-qwen", env), main_dir);
  EXPECT_EQ(*ResolveModelDir("acme/tiny-qwen@main", env), main_dir);
  EXPECT_EQ(*ResolveModelDir("acme/tiny-qwen@v1.0", env), v1_dir);
  EXPECT_EQ(*ResolveModelDir("acme/tiny-qwen@" + std::string(40, 'c'), env), v1_dir);
  auto miss = ResolveModelDir("acme/tiny-qwen@v2", env);
  ASSERT_TRUE(absl::IsNotFound(miss.status()));
  EXPECT_NE(miss.status().message().find("revision 'v2' of acme/tiny-qwen"), std::string::npos);
  EXPECT_NE(miss.status().message().find(cache + "/models--acme--tiny-qwen (refs/v2)"),
            std::string::npos) << miss.status();
  EXPECT_NE(miss.status().message().find("never downloads"), std::string::npos);
}

TEST(HubCache, EnvironmentPrecedence) {
  EXPECT_EQ(HubEnvironment({"/a", "/b", "/c", "/d"}).CacheDirs(), std::vector<std::string>{"/a"});
  EXPECT_EQ(HubEnvironment({"", "/b", "/c", "/d"}).CacheDirs(), std::vector<std::string>{"/b/hub"});
  EXPECT_EQ(HubEnvironment({"", "", "/c", "/d"}).CacheDirs(),
            std::vector<std::string>{"/c/huggingface/hub"});
  EXPECT_EQ(HubEnvironment({"", "", "", "/d"}).CacheDirs(),
            std::vector<std::string>{"/d/.cache/huggingface/hub"});
  EXPECT_TRUE(HubEnvironment({"", "", "", ""}).CacheDirs().empty());
  auto none = ResolveModelDir("acme/x", HubEnvironment{});
  EXPECT_NE(none.status().message().find("set HF_HUB_CACHE"), std::string::npos) << none.status();
}

TEST(HubCache, DirectoriesBuiltinsAndBadSpecs) {
  const HubEnvironment env{testing::TempDir("hub-empty"), "", "", ""};
  const std::string dir = testing::GoldenDir() + "/gpt2";
  EXPECT_EQ(*ResolveModelDir(dir, env), dir);
  EXPECT_EQ(*ResolveModelDir("builtin:gpt2-small", env), "builtin:gpt2-small");
  EXPECT_EQ(*ResolveModelDir("", env), "");
  for (const char* bad : {"/no/such/dir", "../x", "a/b/c", "acme/x@../../etc", "-a/b", "a b"}) {
    auto r = ResolveModelDir(bad, env);
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad << ": " << r.status();
    EXPECT_NE(r.status().message().find("no such directory"), std::string::npos) << r.status();
  }
  EXPECT_TRUE(absl::IsNotFound(ResolveModelDir("gpt2", env).status()));  // a bare name is an id
}

}  // namespace
}  // namespace lensd
