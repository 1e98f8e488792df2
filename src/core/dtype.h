// Element types of stored tensors and scalar conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace rwkv {

// Float types, then ggml's block-quantized types, then this engine's own
// (layouts in core/quant.h).
enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_NL };

// One row per type: elements per block (1 for float types) and bytes per block.
struct DTypeTraits {
  std::string_view name;
  int64_t block_size;
  int64_t block_bytes;
};

inline constexpr DTypeTraits kDTypeTraits[] = {
    {"f32", 1, 4},     {"f16", 1, 2},     {"bf16", 1, 2},    {"q8_0", 32, 34},
    {"q4_0", 32, 18},  {"q4_1", 32, 20},  {"q5_0", 32, 22},  {"q5_1", 32, 24},
    {"q4_nl", 32, 18},
};
inline constexpr int kDTypeCount = int(sizeof(kDTypeTraits) / sizeof(kDTypeTraits[0]));

static_assert(kDTypeCount == int(DType::Q4_NL) + 1, "one row per DType, in enum order");

constexpr const DTypeTraits& dtype_traits(DType t) { return kDTypeTraits[size_t(t)]; }
constexpr bool is_quantized(DType t) { return dtype_traits(t).block_size > 1; }

// Bytes per element of a float type; 0 for quantized types, which have no
// whole per-element size (use dtype_bytes).
constexpr size_t dtype_size(DType t) { return is_quantized(t) ? 0 : size_t(dtype_traits(t).block_bytes); }

// Bytes of n elements; n must be a multiple of the block size.
constexpr size_t dtype_bytes(DType t, int64_t n) {
  return size_t(n / dtype_traits(t).block_size) * size_t(dtype_traits(t).block_bytes);
}

constexpr std::string_view dtype_name(DType t) { return dtype_traits(t).name; }

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even with overflow to infinity and gradual underflow.
inline uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflow (incl. inf)
  if (abs < 0x38800000u) {                        // subnormal or zero
    if (abs < 0x33000000u) return sign;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - int(abs >> 23);  // 14..24
    uint32_t result = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (result & 1u))) ++result;
    return sign | uint16_t(result);
  }
  uint32_t result = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (result & 1u))) ++result;
  return sign | uint16_t(result);
}

// Widens (or dequantizes) n elements of type t at src into dst; for a
// quantized type n must be a multiple of its block size.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);

// Writes the n elements of type t at src, times `factor`, to dst in the same
// type (nbytes bytes): float types value by value (rounded to the type);
// block-quantized types by their fp16 scale d, and minimum m for Q4_1/Q5_1,
// the quants untouched. Returns the first block whose scaled d or m is not
// exact in fp16 (dst is then incomplete), or -1 when all are.
int64_t scale_tensor(DType t, const void* src, size_t n, size_t nbytes, float factor, void* dst);

// Transposes `count` consecutive row-major [rows, cols] matrices of
// `elem_bytes`-sized elements from src into dst (each becomes [cols, rows]).
void transpose_matrices(const std::byte* src, std::byte* dst, int64_t count, int64_t rows, int64_t cols,
                        size_t elem_bytes);

}  // namespace rwkv
