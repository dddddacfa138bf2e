#include "engine/backend/communicator.h"

#include <barrier>
#include <cstring>
#include <vector>

#include "engine/backend/backend.h"

namespace lensd {
namespace {

// Each rank publishes its tensor in its host slot; after a barrier every rank reads all
// slots; a second barrier keeps slots alive until everyone has read them.
class ThreadCommunicator final : public Communicator {
 public:
  explicit ThreadCommunicator(int size) : size_(size), barrier_(size), slots_(size) {}
  int size() const override { return size_; }

  void AllReduceSum(int rank, TensorView x, Backend& backend) override {
    Publish(rank, x, backend);
    std::vector<float> sum(slots_[0]);
    for (int r = 1; r < size_; ++r) {
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += slots_[r][i];
    }
    barrier_.arrive_and_wait();
    backend.Upload(sum.data(), x);
  }

  void AllGather(int rank, TensorView local, TensorView out, Backend& backend,
                 int stride) override {
    Publish(rank, local, backend);
    const int64_t outer = local.shape[0], inner = local.NumElements() / outer;
    const int parts = size_ / stride;
    std::vector<float> all(static_cast<size_t>(outer * inner * parts));
    for (int64_t o = 0; o < outer; ++o) {
      for (int p = 0; p < parts; ++p) {
        std::memcpy(all.data() + (o * parts + p) * inner, slots_[p * stride].data() + o * inner,
                    static_cast<size_t>(inner) * sizeof(float));
      }
    }
    barrier_.arrive_and_wait();
    backend.Upload(all.data(), out);
  }

 private:
  void Publish(int rank, TensorView t, Backend& backend) {
    slots_[rank].resize(static_cast<size_t>(t.NumElements()));
    backend.Download(t, slots_[rank].data());
    barrier_.arrive_and_wait();
  }

  const int size_;
  std::barrier<> barrier_;
  std::vector<std::vector<float>> slots_;  // [rank] host copies
};

}  // namespace

std::unique_ptr<Communicator> MakeThreadCommunicator(int size) {
  return std::make_unique<ThreadCommunicator>(size);
}

}  // namespace lensd
