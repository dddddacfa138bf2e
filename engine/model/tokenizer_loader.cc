// Builds tokenizers from files: tokenizer.json, vocab.json + merges.txt, tokenizer.model.
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/core/status.h"
#include "engine/model/bpe_tokenizer.h"
#include "engine/model/json_fields.h"
#include "nlohmann/json.hpp"

namespace lensd {
namespace {

using nlohmann::json;

// `j[key]` by reference, or a null value: `cond ? j[key] : json()` would copy the subtree.
const json& Field(const json& j, const char* key) {
  static const json* const kNull = new json();
  return JsonHas(j, key) ? j[key] : *kNull;
}

absl::Status ParseVocab(const json& vocab, BpeSpec& spec) {
  if (!vocab.is_object()) return absl::InvalidArgumentError("vocab must be an object");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) return absl::InvalidArgumentError("vocab ids");
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > (1 << 24)) return absl::InvalidArgumentError("vocab id out of range");
    if (static_cast<size_t>(id) >= spec.id_to_token.size()) spec.id_to_token.resize(id + 1);
    spec.id_to_token[id] = it.key();
  }
  return absl::OkStatus();
}

absl::Status ParseMerges(const json& merges, BpeSpec& spec) {
  if (!merges.is_array()) return absl::InvalidArgumentError("merges must be an array");
  for (const auto& m : merges) {
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) return absl::InvalidArgumentError("merge without a space");
      spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return absl::InvalidArgumentError("merge entries must be \"a b\" or [\"a\", \"b\"]");
    }
  }
  return absl::OkStatus();
}

// A Split pre-tokenizer: a Regex pattern, Isolated; or Gemma's split on " ", a no-op after its
// Replace(" ", "▁") normalizer has left no space to split on.
absl::Status ApplySplit(const json& c, BpeSpec& spec) {
  if (spec.space_marker && JsonHas(c, "pattern") &&
      JsonString(c["pattern"], "String", "").value_or("") == " ") {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string behavior, JsonString(c, "behavior", "Isolated"));
  ASSIGN_OR_RETURN(bool invert, JsonBool(c, "invert", false));
  if (behavior != "Isolated" || invert || !c.contains("pattern") ||
      !JsonHas(c["pattern"], "Regex")) {
    return absl::UnimplementedError("only Split with a Regex pattern and Isolated behaviour");
  }
  ASSIGN_OR_RETURN(spec.split_pattern, JsonString(c["pattern"], "Regex", ""));
  return absl::OkStatus();
}

// Metaspace's prepend scheme: always, first (only the text's first segment), never.
absl::Status ApplyMetaspace(const json& c, BpeSpec& spec) {
  ASSIGN_OR_RETURN(std::string scheme, JsonString(c, "prepend_scheme", "always"));
  ASSIGN_OR_RETURN(bool add, JsonBool(c, "add_prefix_space", scheme != "never"));
  if (scheme != "always" && scheme != "first" && scheme != "never") {
    return absl::UnimplementedError(
        absl::StrCat("Metaspace prepend_scheme '", scheme.substr(0, 32), "'"));
  }
  spec.prepend = !add                ? SpacePrepend::kNever
                 : scheme == "first" ? SpacePrepend::kFirstUnlessSpace
                                     : SpacePrepend::kUnlessSpace;
  return absl::OkStatus();
}

// Walks normalizer / pre_tokenizer trees, recording the few component types we implement.
absl::Status ApplyComponent(const json& c, BpeSpec& spec, bool& byte_level_seen) {
  if (c.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, JsonString(c, "type", ""));
  if (type == "Sequence") {
    const char* key = c.contains("pretokenizers") ? "pretokenizers"
                      : c.contains("normalizers") ? "normalizers" : "decoders";
    if (!c.contains(key) || !c[key].is_array()) return absl::InvalidArgumentError("Sequence");
    for (const auto& sub : c[key]) RETURN_IF_ERROR(ApplyComponent(sub, spec, byte_level_seen));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    byte_level_seen = true;
    ASSIGN_OR_RETURN(bool use_regex, JsonBool(c, "use_regex", true));
    ASSIGN_OR_RETURN(spec.add_prefix_space, JsonBool(c, "add_prefix_space", false));
    if (use_regex) spec.split_pattern = kGpt2SplitPattern;
    return absl::OkStatus();
  }
  if (type == "Split") return ApplySplit(c, spec);
  if (type == "Prepend") {
    spec.prepend = SpacePrepend::kEverySegment;
    return absl::OkStatus();
  }
  if (type == "Replace" || type == "Metaspace") {
    spec.space_marker = true;
    return type == "Metaspace" ? ApplyMetaspace(c, spec) : absl::OkStatus();
  }
  if (type == "NFC" || type == "NFKC") {
    spec.normalization = type == "NFC" ? TextNormalization::kNfc : TextNormalization::kNfkc;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat("unsupported tokenizer component '", type, "'"));
}

absl::Status ParseAddedAndBos(const json& j, BpeSpec& spec) {
  if (JsonHas(j, "added_tokens")) {
    if (!j["added_tokens"].is_array()) return absl::InvalidArgumentError("added_tokens");
    for (const auto& a : j["added_tokens"]) {
      if (!JsonHas(a, "content") || !a["content"].is_string() || !JsonHas(a, "id") ||
          !a["id"].is_number_integer()) {
        return absl::InvalidArgumentError("added_tokens entries need content and id");
      }
      int id = a["id"].get<int>();
      if (id < 0 || id > (1 << 24)) return absl::InvalidArgumentError("added token id");
      if (static_cast<size_t>(id) >= spec.id_to_token.size()) spec.id_to_token.resize(id + 1);
      spec.id_to_token[id] = a["content"].get<std::string>();
      spec.added_tokens.emplace_back(a["content"].get<std::string>(), id);
    }
  }
  // A TemplateProcessing post-processor whose single-sequence template starts with a special
  // token prepends it (BOS).
  const json& post = Field(j, "post_processor");
  std::vector<const json*> processors;
  if (JsonHas(post, "processors") && post["processors"].is_array()) {
    for (const auto& p : post["processors"]) processors.push_back(&p);
  } else if (!post.is_null()) {
    processors.push_back(&post);
  }
  for (const json* p : processors) {
    if (!JsonHas(*p, "single") || !(*p)["single"].is_array() || (*p)["single"].empty()) continue;
    const json& first = (*p)["single"][0];
    if (!JsonHas(first, "SpecialToken")) continue;
    ASSIGN_OR_RETURN(std::string name, JsonString(first["SpecialToken"], "id", ""));
    for (const auto& [content, id] : spec.added_tokens) {
      if (content == name) spec.bos_id = id;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseHfTokenizerJson(std::string_view json_text) {
  ASSIGN_OR_RETURN(const json j, ParseJson(json_text));
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  if (!JsonHas(j, "model")) return absl::InvalidArgumentError("missing 'model'");
  const json& model = j["model"];
  ASSIGN_OR_RETURN(std::string type, JsonString(model, "type", "BPE"));
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("unsupported tokenizer model '", type, "'"));
  }
  BpeSpec spec;
  spec.byte_level = false;
  RETURN_IF_ERROR(ParseVocab(Field(model, "vocab"), spec));
  if (JsonHas(model, "merges")) RETURN_IF_ERROR(ParseMerges(model["merges"], spec));
  ASSIGN_OR_RETURN(spec.byte_fallback, JsonBool(model, "byte_fallback", false));
  bool byte_level = false;
  RETURN_IF_ERROR(ApplyComponent(Field(j, "normalizer"), spec, byte_level));
  RETURN_IF_ERROR(ApplyComponent(Field(j, "pre_tokenizer"), spec, byte_level));
  spec.byte_level = byte_level;
  RETURN_IF_ERROR(ParseAddedAndBos(j, spec));
  if (JsonHas(model, "unk_token") && model["unk_token"].is_string()) {
    for (size_t i = 0; i < spec.id_to_token.size(); ++i) {
      if (spec.id_to_token[i] == model["unk_token"].get<std::string>()) spec.unk_id = int(i);
    }
  }
  return MakeBpeTokenizer(std::move(spec));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizerJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto t = ParseHfTokenizerJson(text);
  if (!t.ok()) return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGpt2VocabMerges(const std::string& vocab_path,
                                                                const std::string& merges_path) {
  ASSIGN_OR_RETURN(std::string vocab_text, ReadFileToString(vocab_path));
  ASSIGN_OR_RETURN(std::string merges_text, ReadFileToString(merges_path));
  absl::StatusOr<json> vocab_json = ParseJson(vocab_text);
  if (!vocab_json.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": ", vocab_json.status().message()));
  }
  const json& vocab = *vocab_json;
  BpeSpec spec;
  spec.split_pattern = kGpt2SplitPattern;
  RETURN_IF_ERROR(ParseVocab(vocab, spec));
  json merges = json::array();
  for (absl::string_view line : absl::StrSplit(merges_text, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(std::string(line));
  }
  RETURN_IF_ERROR(ParseMerges(merges, spec));
  if (vocab.contains("<|endoftext|>") && vocab["<|endoftext|>"].is_number_integer()) {
    spec.added_tokens.emplace_back("<|endoftext|>", vocab["<|endoftext|>"].get<int>());
  }
  return MakeBpeTokenizer(std::move(spec));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir) {
  auto exists = [&](const char* name) { return std::ifstream(dir + "/" + name).good(); };
  if (exists("tokenizer.json")) return LoadHfTokenizerJson(dir + "/tokenizer.json");
  if (exists("tokenizer.model")) return LoadSentencePiece(dir + "/tokenizer.model");
  if (exists("vocab.json") && exists("merges.txt")) {
    return LoadGpt2VocabMerges(dir + "/vocab.json", dir + "/merges.txt");
  }
  return absl::NotFoundError(absl::StrCat(
      "no tokenizer in ", dir, " (looked for tokenizer.json, tokenizer.model, "
      "vocab.json+merges.txt); pass --token-ids instead of --prompt"));
}

namespace {
class ByteTokenizer : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int>> Encode(std::string_view text) const override {
    std::vector<int> ids = {1};
    for (unsigned char c : text) ids.push_back(c + 3);
    return ids;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::string s;
    for (int id : ids) {
      if (id >= 3 && id < 259) s += static_cast<char>(id - 3);
    }
    return s;
  }
  int VocabSize() const override { return 259; }
};
}  // namespace

std::unique_ptr<Tokenizer> MakeByteTokenizer() { return std::make_unique<ByteTokenizer>(); }

}  // namespace lensd
