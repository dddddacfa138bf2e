// Runs a libFuzzer target without libFuzzer: the fuzz smoke of ordinary (GCC) builds, in
// ctest. Each input file is run as it is, then as fixed variants of its first 64 KiB: 16
// truncations, bytes overwritten with parser-hostile values at 64 spread positions, the input
// doubled, and spliced with the next input. Deterministic, so a failure reproduces; the
// targets' real fuzzing (coverage-guided, sanitizers) is tools/fuzz.sh. A crash fails the
// test; the last input is printed first, so that it can be kept as a seed.
//   <target>_replay FILE...
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

constexpr size_t kMaxVariantBytes = 64 << 10;  // as tools/fuzz.sh's -max_len

void Run(const std::string& bytes, size_t* runs) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ++*runs;
}

void RunVariants(const std::string& input, const std::string& next, size_t* runs) {
  const std::string in = input.substr(0, kMaxVariantBytes);
  const size_t n = in.size();
  for (size_t k = 0; k < 16; ++k) Run(in.substr(0, n * k / 16), runs);
  static const char kHostile[] = {'\0', '\xff', '"', '{', '[', '9', '\n', '\\', '-', '\x80'};
  for (size_t i = 0; i < 64 && n > 0; ++i) {
    std::string v = in;
    v[i * n / 64] = kHostile[i % sizeof(kHostile)];
    Run(v, runs);
  }
  Run(in + in, runs);
  Run(in.substr(0, n / 2) + next.substr(next.size() / 2, kMaxVariantBytes), runs);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    if (!f) {
      std::fprintf(stderr, "cannot read %s\n", argv[i]);
      return 2;
    }
    inputs.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "usage: %s FILE...\n", argv[0]);
    return 2;
  }
  size_t runs = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::fprintf(stderr, "input %s\n", argv[i + 1]);
    Run(inputs[i], &runs);
    RunVariants(inputs[i], inputs[(i + 1) % inputs.size()], &runs);
  }
  std::printf("%zu inputs, %zu runs, no crash\n", inputs.size(), runs);
  return 0;
}
