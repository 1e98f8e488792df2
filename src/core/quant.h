// ggml's block-quantized weight types, bit-compatible with rwkv.cpp files
// (version 101). Every block holds 32 consecutive weights of a row, with
// little-endian fp16 scales:
//
//   type  bytes  layout                                  weight i
//   Q8_0  34     d f16, q i8[32]                         d * q[i]
//   Q4_0  18     d f16, qs u8[16]                        d * (q[i] - 8)
//   Q4_1  20     d f16, m f16, qs u8[16]                 d * q[i] + m
//   Q5_0  22     d f16, qh u32, qs u8[16]                d * (q[i] - 16)
//   Q5_1  24     d f16, m f16, qh u32, qs u8[16]         d * q[i] + m
//
// 4-bit values: q[i] = qs[i] & 15 and q[i + 16] = qs[i] >> 4 (i < 16).
// 5-bit values add bit i of qh as bit 4 of q[i]. Blocks are byte-packed, so
// nothing here assumes any alignment.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace rwkv {

constexpr int64_t kQuantBlock = 32;

// Quantizes n floats (a multiple of 32) into blocks of type t, rounding as
// ggml's reference quantizers do (quantize_row_*_ref), so that files written
// from the same floats are byte-identical to rwkv.cpp's.
void quantize_row(DType t, const float* x, void* out, int64_t n);

// Decodes n weights (a multiple of 32) of type t.
void dequantize_row(DType t, const void* in, float* out, int64_t n);

}  // namespace rwkv
