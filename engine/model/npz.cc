#include "engine/model/npz.h"

#include <zip.h>

#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/core/dtype.h"

namespace lensd {
namespace {

absl::Status Bad(const std::string& what, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

// The value of `key` in the header dict ("{'descr': '<f4', 'fortran_order': False, 'shape':
// (2, 3), }"), up to the next top-level comma or the closing parenthesis of a tuple.
std::string Field(const std::string& header, const std::string& key) {
  const size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  size_t begin = header.find(':', at);
  if (begin == std::string::npos) return "";
  ++begin;
  while (begin < header.size() && header[begin] == ' ') ++begin;
  const size_t end = header[begin] == '(' ? header.find(')', begin) + 1 : header.find(',', begin);
  return header.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const std::string& text, const std::string& what) {
  absl::string_view tuple = text;
  if (!absl::ConsumePrefix(&tuple, "(") || !absl::ConsumeSuffix(&tuple, ")")) {
    return Bad(what, "no shape tuple in the .npy header");
  }
  std::vector<int64_t> shape;
  for (absl::string_view part : absl::StrSplit(tuple, ',', absl::SkipWhitespace())) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(part, &d) || d < 0) return Bad(what, "a malformed shape in the header");
    shape.push_back(d);
  }
  return shape;
}

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes, const std::string& what) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) {
    return Bad(what, "not a .npy array");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  const size_t len_size = major == 1 ? 2 : 4;
  size_t header_len = 0;
  for (size_t i = 0; i < len_size; ++i) {
    header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
  }
  const size_t data_at = 8 + len_size + header_len;
  if (data_at > bytes.size()) return Bad(what, "a truncated .npy header");
  const std::string header = bytes.substr(8 + len_size, header_len);
  if (Field(header, "fortran_order") != "False") {
    return Bad(what, "a Fortran-order array (save it in C order)");
  }
  const std::string descr = Field(header, "descr");
  DType dtype = DType::kF32;
  bool f64 = false;
  if (descr == "'<f4'") {
    dtype = DType::kF32;
  } else if (descr == "'<f2'") {
    dtype = DType::kF16;
  } else if (descr == "'<f8'") {
    f64 = true;
  } else {
    return Bad(what, absl::StrCat("dtype ", descr, " (float16, float32 or float64 expected)"));
  }
  NpyArray out;
  auto shape = ParseShape(Field(header, "shape"), what);
  if (!shape.ok()) return shape.status();
  out.shape = *shape;
  size_t n = 1;
  for (int64_t d : out.shape) n *= static_cast<size_t>(d);
  const size_t width = f64 ? 8 : DTypeSize(dtype);
  if (bytes.size() - data_at != n * width) {
    return Bad(what, absl::StrCat("holds ", bytes.size() - data_at, " data bytes; its shape needs ",
                                  n * width));
  }
  out.data.resize(n);
  const char* data = bytes.data() + data_at;
  if (f64) {
    for (size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, data + 8 * i, 8);
      out.data[i] = static_cast<float>(v);
    }
  } else {
    ConvertToF32(dtype, data, out.data.data(), n);
  }
  return out;
}

absl::StatusOr<std::map<std::string, NpyArray>> ReadNpz(const std::string& path) {
  int error = 0;
  std::unique_ptr<zip_t, decltype(&zip_discard)> archive(zip_open(path.c_str(), ZIP_RDONLY, &error),
                                                         &zip_discard);
  if (archive == nullptr) {
    zip_error_t e;
    zip_error_init_with_code(&e, error);
    const std::string why = zip_error_strerror(&e);
    zip_error_fini(&e);
    return error == ZIP_ER_NOENT ? absl::NotFoundError(absl::StrCat("cannot open ", path))
                                 : Bad(path, "not a readable .npz (zip) archive: " + why);
  }
  std::map<std::string, NpyArray> out;
  const zip_int64_t count = zip_get_num_entries(archive.get(), 0);
  for (zip_int64_t i = 0; i < count; ++i) {
    zip_stat_t st;
    if (zip_stat_index(archive.get(), i, 0, &st) != 0) return Bad(path, "an unreadable member");
    absl::string_view name = st.name;
    const std::string what = absl::StrCat(path, " member ", st.name);
    if (!absl::ConsumeSuffix(&name, ".npy")) return Bad(what, "not a .npy array");
    std::unique_ptr<zip_file_t, decltype(&zip_fclose)> file(zip_fopen_index(archive.get(), i, 0),
                                                            &zip_fclose);
    if (file == nullptr) return Bad(what, zip_strerror(archive.get()));
    std::string bytes(static_cast<size_t>(st.size), '\0');
    if (zip_fread(file.get(), bytes.data(), st.size) != static_cast<zip_int64_t>(st.size)) {
      return Bad(what, "truncated");
    }
    auto array = ParseNpy(bytes, what);
    if (!array.ok()) return array.status();
    out[std::string(name)] = *std::move(array);
  }
  return out;
}

}  // namespace lensd
