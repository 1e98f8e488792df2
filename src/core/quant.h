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
//
// This engine's own type (not in ggml or rwkv.cpp; only this engine reads it):
//
//   Q4_NL 18     d f16, qs u8[16]                        d * kQ4NlLevels[q[i]]
//
// Same size as Q4_0 (4.5 bits per weight), but the 16 levels are not evenly
// spaced: they are a Lloyd-Max codebook (int8, from -127 to +105) fitted to
// blocks of Gaussian weights, as trained matrices' blocks are, so that more
// levels sit where most weights are (scripts/q4_nl_codebook.py derives it).
// The quantizer searches the scale that minimises the block's squared error
// (both orientations of the asymmetric codebook, several candidate scales
// each refined by least squares) rather than deriving it from the largest
// weight. Relative RMS error on Gaussian blocks: 0.073, against Q4_0's 0.086
// and Q4_1's 0.078 (5 bits per weight). The idea is that of llama.cpp's
// IQ4_NL; the table and the search are this engine's, and the bytes are not
// compatible with it.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace rwkv {

constexpr int64_t kQuantBlock = 32;

// Q4_NL's levels, ascending; q indexes them.
inline constexpr int8_t kQ4NlLevels[16] = {-127, -99, -78, -62, -48, -35, -23, -11,
                                           0,    11,  23,  35,  49,  64,  82,  105};

// Quantizes n floats (a multiple of 32) into blocks of type t, rounding as
// ggml's reference quantizers do (quantize_row_*_ref), so that files written
// from the same floats are byte-identical to rwkv.cpp's; Q4_NL by its search.
void quantize_row(DType t, const float* x, void* out, int64_t n);

// Decodes n weights (a multiple of 32) of type t.
void dequantize_row(DType t, const void* in, float* out, int64_t n);

}  // namespace rwkv
