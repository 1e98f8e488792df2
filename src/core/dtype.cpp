#include "core/dtype.h"

#include "core/quant.h"

namespace rwkv {

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  if (n == 0) return;  // empty tensors may come with null pointers
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    default:
      dequantize_row(t, src, dst, int64_t(n));
      return;
  }
}

}  // namespace rwkv
