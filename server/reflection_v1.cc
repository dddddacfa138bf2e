#include "server/reflection_v1.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <set>

namespace lensd {
namespace {

namespace pb = google::protobuf;
using grpc::reflection::v1::ServerReflectionRequest;
using grpc::reflection::v1::ServerReflectionResponse;

// Adds `file` and the dependencies not yet sent on this stream (the protocol lets a server skip
// those; clients keep what they received).
void AddFile(const pb::FileDescriptor* file, std::set<std::string>& sent,
             ServerReflectionResponse& out) {
  if (!sent.insert(file->name()).second) return;
  pb::FileDescriptorProto proto;
  file->CopyTo(&proto);
  proto.SerializeToString(out.mutable_file_descriptor_response()->add_file_descriptor_proto());
  for (int i = 0; i < file->dependency_count(); ++i) AddFile(file->dependency(i), sent, out);
}

void NotFound(const std::string& what, ServerReflectionResponse& out) {
  out.mutable_error_response()->set_error_code(static_cast<int>(grpc::StatusCode::NOT_FOUND));
  out.mutable_error_response()->set_error_message(what + " not found");
}

void Answer(const ServerReflectionRequest& request, const std::vector<std::string>& services,
            std::set<std::string>& sent, ServerReflectionResponse& out) {
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  switch (request.message_request_case()) {
    case ServerReflectionRequest::kListServices:
      for (const std::string& name : services) {
        out.mutable_list_services_response()->add_service()->set_name(name);
      }
      return;
    case ServerReflectionRequest::kFileByFilename: {
      const pb::FileDescriptor* file = pool->FindFileByName(request.file_by_filename());
      if (file == nullptr) return NotFound("file " + request.file_by_filename(), out);
      return AddFile(file, sent, out);
    }
    case ServerReflectionRequest::kFileContainingSymbol: {
      const pb::FileDescriptor* file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) return NotFound("symbol " + request.file_containing_symbol(), out);
      return AddFile(file, sent, out);
    }
    case ServerReflectionRequest::kFileContainingExtension: {
      const auto& ext = request.file_containing_extension();
      const pb::Descriptor* type = pool->FindMessageTypeByName(ext.containing_type());
      const pb::FieldDescriptor* field =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, ext.extension_number());
      if (field == nullptr) return NotFound("extension of " + ext.containing_type(), out);
      return AddFile(field->file(), sent, out);
    }
    case ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const pb::Descriptor* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) return NotFound("type " + request.all_extension_numbers_of_type(), out);
      std::vector<const pb::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* numbers = out.mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const pb::FieldDescriptor* f : extensions) numbers->add_extension_number(f->number());
      return;
    }
    case ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
      out.mutable_error_response()->set_error_code(
          static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
      out.mutable_error_response()->set_error_message("no message_request set");
      return;
  }
}

}  // namespace

grpc::Status ReflectionV1::ServerReflectionInfo(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<ServerReflectionResponse, ServerReflectionRequest>* stream) {
  std::set<std::string> sent;  // files already sent on this stream
  ServerReflectionRequest request;
  while (stream->Read(&request)) {
    ServerReflectionResponse response;
    response.set_valid_host(request.host());
    *response.mutable_original_request() = request;
    Answer(request, services_, sent, response);
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

}  // namespace lensd
