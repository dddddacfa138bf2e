// Element types of tensors on the wire, in checkpoints and on devices.
#ifndef LENSD_ENGINE_CORE_DTYPE_H_
#define LENSD_ENGINE_CORE_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace lensd {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32 };

size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "F16", "BF16", "I32".
std::string_view DTypeName(DType dtype);
absl::StatusOr<DType> ParseDTypeName(std::string_view name);
// User-facing spelling used by --dtype and the API: float32, float16, bfloat16.
absl::StatusOr<DType> ParseFloatDType(std::string_view name);

float BF16ToF32(uint16_t bits);
uint16_t F32ToBF16(float value);  // round to nearest even; NaN stays NaN
float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float value);  // round to nearest even, overflow to inf

// Converts n floating-point elements of `src_dtype` to float32. I32 is not a float type.
void ConvertToF32(DType src_dtype, const void* src, float* dst, size_t n);
void ConvertFromF32(const float* src, DType dst_dtype, void* dst, size_t n);

}  // namespace lensd

#endif  // LENSD_ENGINE_CORE_DTYPE_H_
