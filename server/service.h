// The lensd.v1.Lensd gRPC service (callback API). Handlers validate at the edge, then either
// answer directly (Tokenize, Detokenize, GetModelInfo, ListHooks) or submit a Job to the
// scheduler and return a streaming reactor fed by the job's sink. Handlers never block.
// Until a model is attached every RPC is UNAVAILABLE; after StartDrain new calls are
// UNAVAILABLE while accepted ones finish.
#ifndef LENSD_SERVER_SERVICE_H_
#define LENSD_SERVER_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "lensd/v1/lensd.grpc.pb.h"
#include "server/request_edge.h"
#include "server/scheduler.h"
#include "server/stream_reactor.h"

namespace lensd {

struct ServiceOptions {
  ServerLimits limits;
  int max_sweep_cells = 4096;  // PatchSweep cells per request
  std::string auth_token;  // non-empty: require "authorization: Bearer <token>"
  std::chrono::milliseconds stall_timeout{30000};  // cancel a stream whose client stops reading
};

// The loaded model as the service sees it (owned by the caller, outlives the service's use).
struct ServingModel {
  Model* model = nullptr;
  Scheduler* scheduler = nullptr;
  std::string name;        // model directory or "builtin:..."
  std::string processing;  // "none" / "transformer-lens"
  const SaeSet* saes = nullptr;
};

class LensdService final : public v1::Lensd::CallbackService {
 public:
  explicit LensdService(ServiceOptions options);
  ~LensdService() override;

  void AttachModel(const ServingModel& serving);  // once, after loading
  void StartDrain();
  // Streams still open (accepted and not yet finished).
  int OpenStreams();

  grpc::ServerWriteReactor<v1::GenerateEvent>* Generate(grpc::CallbackServerContext* ctx,
                                                        const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::CacheMessage>* RunWithCache(
      grpc::CallbackServerContext* ctx, const v1::RunWithCacheRequest* request) override;
  grpc::ServerWriteReactor<v1::PatchSweepMessage>* PatchSweep(
      grpc::CallbackServerContext* ctx, const v1::PatchSweepRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* ListHooks(grpc::CallbackServerContext* ctx,
                                      const v1::ListHooksRequest* request,
                                      v1::ListHooksResponse* response) override;

 private:
  // OK when the call may proceed: authorised, model attached, not draining.
  absl::Status Gate(grpc::CallbackServerContext* ctx) const;
  // Gate, then the model's tokenizer (FAILED_PRECONDITION when it has none).
  absl::StatusOr<const Tokenizer*> GateTokenizer(grpc::CallbackServerContext* ctx) const;
  ModelFacts Facts() const;
  void Track(std::shared_ptr<StreamState> stream);
  void Watchdog();
  absl::Status SubmitJob(Job job, grpc::CallbackServerContext* ctx,
                         std::shared_ptr<StreamState> stream);

  const ServiceOptions options_;
  std::atomic<bool> attached_{false};
  std::atomic<bool> draining_{false};
  ServingModel serving_;  // written once before attached_ is set

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::weak_ptr<StreamState>> streams_ ABSL_GUARDED_BY(mu_);
  std::thread watchdog_;
};

}  // namespace lensd

#endif  // LENSD_SERVER_SERVICE_H_
