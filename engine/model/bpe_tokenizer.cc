#include "engine/model/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace lensd {

const char kGpt2SplitPattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

constexpr char kSpaceMarker[] = "\xE2\x96\x81";  // U+2581 "▁"

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};

size_t Utf8Len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

std::string CodepointToUtf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's reversible byte -> printable-unicode table.
struct ByteTable {
  std::string to_unicode[256];
  absl::flat_hash_map<std::string, unsigned char> to_byte;
  ByteTable() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_unicode[b] = CodepointToUtf8(printable ? b : 256 + extra++);
      to_byte[to_unicode[b]] = static_cast<unsigned char>(b);
    }
  }
};

const ByteTable& Bytes() {
  static const ByteTable* table = new ByteTable();
  return *table;
}

std::vector<std::string> SplitChars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = std::min(Utf8Len(static_cast<unsigned char>(s[i])), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

class BpeTokenizer : public Tokenizer {
 public:
  absl::Status Init(BpeSpec spec);
  absl::StatusOr<std::vector<int>> Encode(std::string_view text) const override;
  std::string Decode(const std::vector<int>& ids) const override;
  int VocabSize() const override { return static_cast<int>(spec_.id_to_token.size()); }

 private:
  // One segment of text between added tokens; `at_start`: it begins the text.
  absl::Status EncodeText(std::string_view text, bool at_start, std::vector<int>& out) const;
  absl::Status EncodePiece(const std::string& piece, std::vector<int>& out) const;
  std::vector<std::string> Merge(std::vector<std::string> symbols) const;
  std::string MergeKey(const std::string& a, const std::string& b) const {
    return absl::StrCat(a, "\x01", b);
  }

  BpeSpec spec_;
  absl::flat_hash_map<std::string, int> token_to_id_;
  absl::flat_hash_map<std::string, int> merge_rank_;
  absl::flat_hash_map<int, std::string> added_by_id_;
  std::unique_ptr<pcre2_code, CodeDeleter> regex_;
};

absl::Status BpeTokenizer::Init(BpeSpec spec) {
  spec_ = std::move(spec);
  for (size_t i = 0; i < spec_.id_to_token.size(); ++i) {
    token_to_id_.emplace(spec_.id_to_token[i], static_cast<int>(i));
  }
  for (size_t r = 0; r < spec_.merges.size(); ++r) {
    merge_rank_.emplace(MergeKey(spec_.merges[r].first, spec_.merges[r].second),
                        static_cast<int>(r));
  }
  for (const auto& [content, id] : spec_.added_tokens) added_by_id_[id] = content;
  // Longest first, so that a token that prefixes another never shadows it.
  std::stable_sort(spec_.added_tokens.begin(), spec_.added_tokens.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  if (!spec_.split_pattern.empty()) {
    int err;
    PCRE2_SIZE offset;
    regex_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(spec_.split_pattern.c_str()),
                               PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &offset,
                               nullptr));
    if (!regex_) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer split pattern does not compile at offset ", offset));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> BpeTokenizer::Merge(std::vector<std::string> symbols) const {
  // Symbols form a linked list; candidate pairs wait in a heap ordered by (merge rank, left
  // position), as in Hugging Face tokenizers. O(n log n): one huge word costs milliseconds
  // (rescanning every pair after each merge was quadratic). A candidate is stale once either
  // side died or grew, which the recorded sizes detect (symbols only grow by merging).
  struct Candidate {
    int rank, left, right;
    size_t left_size, right_size;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  const int n = static_cast<int>(symbols.size());
  std::vector<int> next(n), prev(n);
  for (int i = 0; i < n; ++i) next[i] = i + 1 < n ? i + 1 : -1, prev[i] = i - 1;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int left) {
    const int right = left < 0 ? -1 : next[left];
    if (right < 0) return;
    auto it = merge_rank_.find(MergeKey(symbols[left], symbols[right]));
    if (it == merge_rank_.end()) return;
    heap.push({it->second, left, right, symbols[left].size(), symbols[right].size()});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (next[c.left] != c.right || symbols[c.left].size() != c.left_size ||
        symbols[c.right].size() != c.right_size) {
      continue;
    }
    symbols[c.left] += symbols[c.right];
    symbols[c.right].clear();
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    next[c.right] = -2;  // dead
    consider(prev[c.left]);
    consider(c.left);
  }
  std::vector<std::string> out;
  for (int i = 0; i >= 0 && i < n; i = next[i]) out.push_back(std::move(symbols[i]));
  return out;
}

absl::Status BpeTokenizer::EncodePiece(const std::string& piece, std::vector<int>& out) const {
  std::string mapped;
  if (spec_.byte_level) {
    for (unsigned char c : piece) mapped += Bytes().to_unicode[c];
  } else {
    mapped = piece;
  }
  for (const std::string& sym : Merge(SplitChars(mapped))) {
    auto it = token_to_id_.find(sym);
    if (it != token_to_id_.end()) {
      out.push_back(it->second);
    } else if (spec_.byte_fallback) {
      for (unsigned char c : sym) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", c);
        auto b = token_to_id_.find(name);
        if (b == token_to_id_.end()) return absl::InvalidArgumentError("missing byte token");
        out.push_back(b->second);
      }
    } else if (spec_.unk_id >= 0) {
      out.push_back(spec_.unk_id);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("text contains a symbol the vocabulary cannot represent"));
    }
  }
  return absl::OkStatus();
}

std::string Normalized(std::string_view text, TextNormalization form) {
  if (form == TextNormalization::kNone) return std::string(text);
  // utf8proc's NFC / NFKC, the normal forms Hugging Face tokenizers' normalizers apply.
  const int options =
      UTF8PROC_STABLE | UTF8PROC_COMPOSE | (form == TextNormalization::kNfkc ? UTF8PROC_COMPAT : 0);
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &mapped,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) return std::string(text);  // invalid UTF-8 is refused before this
  std::string out(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
  std::free(mapped);
  return out;
}

absl::Status BpeTokenizer::EncodeText(std::string_view text, bool at_start,
                                      std::vector<int>& out) const {
  if (text.empty()) return absl::OkStatus();
  std::string normalized = Normalized(text, spec_.normalization);
  if (spec_.space_marker) {
    std::string r;
    for (char c : normalized) r += (c == ' ') ? std::string(kSpaceMarker) : std::string(1, c);
    const bool marked = r.rfind(kSpaceMarker, 0) == 0;
    const SpacePrepend p = spec_.prepend;
    if (p == SpacePrepend::kEverySegment || (p == SpacePrepend::kUnlessSpace && !marked) ||
        (p == SpacePrepend::kFirstUnlessSpace && at_start && !marked)) {
      r.insert(0, kSpaceMarker);
    }
    normalized = std::move(r);
  }
  if (!regex_) return EncodePiece(normalized, out);
  auto* md = pcre2_match_data_create_from_pattern(regex_.get(), nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(normalized.data());
  size_t pos = 0, gap_start = 0;
  absl::Status status;
  while (pos < normalized.size() && status.ok()) {
    int rc = pcre2_match(regex_.get(), subject, normalized.size(), pos, 0, md, nullptr);
    if (rc < 0) break;  // no further match (other errors are excluded by the UTF check)
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[0] > gap_start) status = EncodePiece(normalized.substr(gap_start, ov[0] - gap_start), out);
    if (ov[1] > ov[0] && status.ok()) status = EncodePiece(normalized.substr(ov[0], ov[1] - ov[0]), out);
    gap_start = ov[1];
    pos = ov[1] > ov[0] ? ov[1] : ov[1] + Utf8Len(subject[ov[1]]);
  }
  pcre2_match_data_free(md);
  RETURN_IF_ERROR(status);
  if (gap_start < normalized.size()) return EncodePiece(normalized.substr(gap_start), out);
  return absl::OkStatus();
}

bool ValidUtf8(std::string_view s) {
  int err;
  PCRE2_SIZE off;
  // An empty pattern compiled with UTF validates the subject on match.
  static pcre2_code* empty = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(""), 0, PCRE2_UTF, &err,
                                           &off, nullptr);
  auto* md = pcre2_match_data_create(1, nullptr);
  int rc = pcre2_match(empty, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0 || rc == PCRE2_ERROR_NOMATCH;
}

absl::StatusOr<std::vector<int>> BpeTokenizer::Encode(std::string_view text) const {
  if (!ValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int> ids;
  if (spec_.bos_id >= 0) ids.push_back(spec_.bos_id);
  std::string prefixed;
  if (spec_.add_prefix_space && !text.empty() && text[0] != ' ') {
    prefixed = " " + std::string(text);
    text = prefixed;
  }
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const std::pair<std::string, int>* hit = nullptr;
    for (const auto& added : spec_.added_tokens) {
      if (!added.first.empty() && text.substr(i, added.first.size()) == added.first) {
        hit = &added;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    RETURN_IF_ERROR(EncodeText(text.substr(start, i - start), start == 0, ids));
    ids.push_back(hit->second);
    i += hit->first.size();
    start = i;
  }
  RETURN_IF_ERROR(EncodeText(text.substr(start), start == 0, ids));
  return ids;
}

std::string BpeTokenizer::Decode(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) {
    if (id < 0 || id >= VocabSize() || id == spec_.bos_id) continue;
    auto added = added_by_id_.find(id);
    if (added != added_by_id_.end()) {
      out += added->second;
      continue;
    }
    const std::string& tok = spec_.id_to_token[id];
    if (spec_.byte_level) {
      for (const std::string& ch : SplitChars(tok)) {
        auto b = Bytes().to_byte.find(ch);
        if (b != Bytes().to_byte.end()) out += static_cast<char>(b->second);
      }
    } else if (spec_.byte_fallback && tok.size() == 6 && tok.rfind("<0x", 0) == 0) {
      out += static_cast<char>(std::strtol(tok.substr(3, 2).c_str(), nullptr, 16));
    } else {
      for (size_t i = 0; i < tok.size();) {
        if (spec_.space_marker && tok.compare(i, 3, kSpaceMarker) == 0) {
          out += ' ';
          i += 3;
        } else {
          out += tok[i++];
        }
      }
    }
  }
  if (spec_.prepend != SpacePrepend::kNever && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeBpeTokenizer(BpeSpec spec) {
  auto t = std::make_unique<BpeTokenizer>();
  RETURN_IF_ERROR(t->Init(std::move(spec)));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace lensd
