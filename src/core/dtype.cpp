#include "core/dtype.h"

#include <cstring>
#include <vector>

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

int64_t scale_tensor(DType t, const void* src, size_t n, size_t nbytes, float factor, void* dst) {
  auto* out = static_cast<unsigned char*>(dst);
  if (is_quantized(t)) {
    std::memcpy(out, src, nbytes);
    const size_t bytes = size_t(dtype_traits(t).block_bytes);
    const int halves = t == DType::Q4_1 || t == DType::Q5_1 ? 2 : 1;  // d at offset 0, then m
    for (size_t b = 0; b < nbytes / bytes; ++b)
      for (int k = 0; k < halves; ++k) {
        unsigned char* at = out + b * bytes + 2 * size_t(k);
        uint16_t h;
        std::memcpy(&h, at, 2);
        const float x = f16_to_f32(h) * factor;
        h = f32_to_f16(x);
        if (f16_to_f32(h) != x) return int64_t(b);
        std::memcpy(at, &h, 2);
      }
    return -1;
  }
  std::vector<float> v(n);
  convert_to_f32(t, src, v.data(), n);
  for (size_t i = 0; i < n; ++i) {
    const float x = v[i] * factor;
    if (t == DType::F32) {
      std::memcpy(out + 4 * i, &x, 4);
    } else {
      const uint16_t h = t == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
  return -1;
}

void transpose_matrices(const std::byte* src, std::byte* dst, int64_t count, int64_t rows, int64_t cols,
                        size_t elem_bytes) {
  for (int64_t k = 0; k < count; ++k) {
    const std::byte* s = src + size_t(k * rows * cols) * elem_bytes;
    std::byte* d = dst + size_t(k * rows * cols) * elem_bytes;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        std::memcpy(d + size_t(j * rows + i) * elem_bytes, s + size_t(i * cols + j) * elem_bytes, elem_bytes);
  }
}

}  // namespace rwkv
