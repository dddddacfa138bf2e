// Memory-mapped safetensors checkpoints (single file or sharded with an index) and a writer.
#ifndef LENSD_ENGINE_MODEL_SAFETENSORS_H_
#define LENSD_ENGINE_MODEL_SAFETENSORS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace lensd {

struct TensorInfo {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // into the mapping; valid while the file is open
  size_t num_bytes = 0;
};

// One mapped file. Every header entry is validated on open (dtype, shape·size = byte range,
// range inside the file, no overlap past the end), so later reads never fault.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory image (used by Open and by tests/fuzzers). `bytes` must outlive the file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(const void* bytes, size_t size,
                                                                 const std::string& name);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* Find(const std::string& name) const;
  // Drops the pages under `t` from the process's resident set once it has been consumed, so
  // that loading never keeps the file's pages resident (they are re-read if touched again).
  // No-op for parsed in-memory images.
  void Evict(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  // Error names the tensor and the directory when absent.
  absl::StatusOr<const TensorInfo*> Get(const std::string& name) const;
  bool Has(const std::string& name) const;
  void Evict(const std::string& name) const;  // see SafetensorsFile::Evict
  // "path/to/shard.safetensors" holding `name` (for error messages).
  std::string FileOf(const std::string& name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, int> index_;
};

// Builds a safetensors image in memory and writes it. Tensors are written in name order, as
// the reference implementation does; header padded with spaces to 8 bytes.
class SafetensorsWriter {
 public:
  void Add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
           const void* data, size_t num_bytes);
  void AddF32(const std::string& name, const TensorView& v);
  std::string Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace lensd

#endif  // LENSD_ENGINE_MODEL_SAFETENSORS_H_
