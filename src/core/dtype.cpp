#include "core/dtype.h"

#include <cstring>

#include "core/quant.h"

namespace rwkv {

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  if (n == 0) return;  // empty tensors may come with null pointers
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    // 16-bit values may sit at odd addresses (packed files, tests of unaligned
    // tails): read them with memcpy, never through a uint16_t pointer.
    case DType::F16: {
      const auto* s = static_cast<const unsigned char*>(src);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    }
    case DType::BF16: {
      const auto* s = static_cast<const unsigned char*>(src);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    }
    default:
      dequantize_row(t, src, dst, int64_t(n));
      return;
  }
}

}  // namespace rwkv
