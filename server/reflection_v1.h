// grpc.reflection.v1, beside the v1alpha service gRPC 1.51 provides: current grpcurl and grpcui
// ask v1 first. Answers from the generated descriptor pool, like gRPC's own v1alpha service.
#ifndef LENSD_SERVER_REFLECTION_V1_H_
#define LENSD_SERVER_REFLECTION_V1_H_

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace lensd {

class ReflectionV1 final : public grpc::reflection::v1::ServerReflection::Service {
 public:
  // `services`: the full names list_services reports.
  explicit ReflectionV1(std::vector<std::string> services) : services_(std::move(services)) {}

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<grpc::reflection::v1::ServerReflectionResponse,
                               grpc::reflection::v1::ServerReflectionRequest>* stream) override;

 private:
  std::vector<std::string> services_;
};

}  // namespace lensd

#endif  // LENSD_SERVER_REFLECTION_V1_H_
