// Collectives between the tensor-parallel ranks of one pipeline stage. Every rank calls each
// collective in the same order (SPMD); results are identical on all ranks. The CPU
// implementation runs ranks as threads over virtual CPU devices, so tensor parallelism is
// tested without GPUs; an NCCL implementation gives the same semantics on CUDA devices.
#ifndef LENSD_ENGINE_BACKEND_COMMUNICATOR_H_
#define LENSD_ENGINE_BACKEND_COMMUNICATOR_H_

#include <memory>

#include "engine/core/tensor.h"

namespace lensd {

class Backend;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int size() const = 0;
  // x := sum over ranks of x (float32, in place), added in rank order on every rank.
  virtual void AllReduceSum(int rank, TensorView x, Backend& backend) = 0;
  // `local` [outer, inner] of ranks 0, stride, 2·stride, ... -> `out`
  // [outer, size / stride * inner]: row o is rank 0's row o, then rank stride's, ...
  // (concatenation along the split dimension; stride > 1 skips replicas).
  virtual void AllGather(int rank, TensorView local, TensorView out, Backend& backend,
                         int stride = 1) = 0;
};

// Ranks are threads of one process; `size` threads must call every collective.
std::unique_ptr<Communicator> MakeThreadCommunicator(int size);

}  // namespace lensd

#endif  // LENSD_ENGINE_BACKEND_COMMUNICATOR_H_
