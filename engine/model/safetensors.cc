#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "engine/model/json_fields.h"
#include "nlohmann/json.hpp"

namespace lensd {
namespace {

using nlohmann::json;

absl::Status Corrupt(const std::string& name, const std::string& what) {
  return absl::DataLossError(absl::StrCat(name, ": ", what));
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& file, const std::string& tensor,
                                      const json& e, const char* base, size_t data_size) {
  auto where = [&](const std::string& what) {
    return Corrupt(file, absl::StrCat("tensor '", tensor, "': ", what));
  };
  if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string() ||
      !e.contains("shape") || !e["shape"].is_array() || !e.contains("data_offsets") ||
      !e["data_offsets"].is_array() || e["data_offsets"].size() != 2) {
    return where("header entry needs dtype, shape and data_offsets");
  }
  TensorInfo info;
  auto dtype = ParseDTypeName(e["dtype"].get<std::string>());
  if (!dtype.ok()) return where(std::string(dtype.status().message()));
  info.dtype = *dtype;
  uint64_t count = 1;
  for (const auto& d : e["shape"]) {
    if (!d.is_number_unsigned() && !d.is_number_integer()) return where("bad shape");
    int64_t v = d.get<int64_t>();
    if (v < 0 || v > (int64_t{1} << 40)) return where("bad shape");
    if (info.shape.size() == static_cast<size_t>(kMaxRank)) return where("rank too large");
    info.shape.push_back(v);
    // Checked multiplication: [2^40, 2^24] must not wrap to 0 elements.
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(v), &count) ||
        count > (uint64_t{1} << 48)) {
      return where("shape too large");
    }
  }
  const auto& off = e["data_offsets"];
  if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    return where("data_offsets must be non-negative integers");
  }
  uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return where(absl::StrCat("data_offsets [", begin, ", ", end, ") outside the ", data_size,
                              "-byte data section (truncated file?)"));
  }
  if (end - begin != count * DTypeSize(info.dtype)) {
    return where(absl::StrCat("byte range ", end - begin, " does not match shape (expected ",
                              count * DTypeSize(info.dtype), ")"));
  }
  info.data = base + begin;
  info.num_bytes = end - begin;
  return info;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(const void* bytes,
                                                                         size_t size,
                                                                         const std::string& name) {
  if (size < 8) return Corrupt(name, "file shorter than the 8-byte header length");
  uint64_t header_len;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > size - 8) {
    return Corrupt(name, absl::StrCat("header length ", header_len, " exceeds file size ", size));
  }
  const char* header = static_cast<const char*>(bytes) + 8;
  absl::StatusOr<json> parsed = ParseJson(std::string_view(header, header_len));
  if (!parsed.ok()) return Corrupt(name, absl::StrCat("header: ", parsed.status().message()));
  const json& j = *parsed;
  if (!j.is_object()) return Corrupt(name, "header is not a JSON object");
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  const char* base = header + header_len;
  size_t data_size = size - 8 - header_len;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(name, it.key(), it.value(), base, data_size));
    f->tensors_.emplace(it.key(), std::move(info));
  }
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat("cannot stat ", path));
  }
  size_t size = static_cast<size_t>(st.st_size);
  void* map = size ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
  ::close(fd);
  if (map == MAP_FAILED) return absl::DataLossError(absl::StrCat("cannot mmap ", path));
  auto parsed = Parse(map, size, path);
  if (!parsed.ok()) {
    if (map) ::munmap(map, size);
    return parsed.status();
  }
  (*parsed)->mapping_ = map;
  (*parsed)->mapping_size_ = size;
  return parsed;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  auto ck = std::make_unique<Checkpoint>();
  ck->dir_ = dir;
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::vector<std::string> shards;
  if (std::ifstream(index_path).good()) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    absl::StatusOr<json> parsed = ParseJson(text);
    if (!parsed.ok()) return Corrupt(index_path, std::string(parsed.status().message()));
    const json& j = *parsed;
    if (!j.is_object() || !j.contains("weight_map") ||
        !j["weight_map"].is_object()) {
      return Corrupt(index_path, "index needs a weight_map object");
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) return Corrupt(index_path, "weight_map values are file names");
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos) return Corrupt(index_path, "shard outside dir");
      bool seen = false;
      for (const auto& s : shards) seen |= (s == shard);
      if (!seen) shards.push_back(shard);
    }
  } else {
    shards.push_back("model.safetensors");
  }
  for (const auto& shard : shards) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/" + shard));
    int idx = static_cast<int>(ck->files_.size());
    for (const auto& [name, info] : file->tensors()) ck->index_[name] = idx;
    ck->files_.push_back(std::move(file));
  }
  return ck;
}

bool Checkpoint::Has(const std::string& name) const { return index_.count(name) != 0; }

absl::StatusOr<const TensorInfo*> Checkpoint::Get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' missing from checkpoint ", dir_));
  }
  return files_[it->second]->Find(name);
}

void SafetensorsFile::Evict(const TensorInfo& t) const {
  if (mapping_ == nullptr || t.num_bytes == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(t.data) + t.num_bytes;
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void Checkpoint::Evict(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return;
  if (const TensorInfo* t = files_[it->second]->Find(name)) files_[it->second]->Evict(*t);
}

std::string Checkpoint::FileOf(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? dir_ : files_[it->second]->path();
}

void SafetensorsWriter::Add(const std::string& name, DType dtype,
                            const std::vector<int64_t>& shape, const void* data,
                            size_t num_bytes) {
  entries_[name] = Entry{dtype, shape, std::string(static_cast<const char*>(data), num_bytes)};
}

void SafetensorsWriter::AddF32(const std::string& name, const TensorView& v) {
  Add(name, v.dtype, v.shape.ToVector(), v.data, v.NumBytes());
}

std::string SafetensorsWriter::Serialize() const {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, e] : entries_) {
    header[name] = {{"dtype", std::string(DTypeName(e.dtype))},
                    {"shape", e.shape},
                    {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  out += h;
  for (const auto& [name, e] : entries_) out += e.bytes;
  return out;
}

absl::Status SafetensorsWriter::WriteFile(const std::string& path) const {
  std::string bytes = Serialize();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("failed writing ", path));
  return absl::OkStatus();
}

}  // namespace lensd
