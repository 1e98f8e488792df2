// Quantized weights repacked for int8 dot products (kernels_packed.h).
//
// Layout: rows go in groups of sixteen (the last group repeats the last
// row); a group stores, block by block, the sixteen rows' fp16 scales (then,
// for Q4_1, their fp16 minimums) followed by the quants interleaved four
// bytes at a time: 64 bytes hold the same four elements of all sixteen rows.
// One 512-bit int8 dot product against four activation bytes broadcast to
// every lane then gives each row's partial sum in its own lane, so a block
// ends with the sixteen rows' exact integer dot products in one vector: one
// convert and one multiply-add per block for sixteen rows, where the
// row-major layout needs them per row. 256-bit code takes each group as two
// halves of eight rows. Each thread's rows are one contiguous stream.
//
//   Q8_0  d[16] | 8 x 64 bytes: element 4j+i of row r at 64j + 4r + i, as q ^ 0x80
//   Q4_0, Q4_NL  d[16] | 4 x 64 bytes: byte i of row r's quants for chunk k at
//         64k + 4r + i, i.e. elements 4k+i (low nibble) and 16+4k+i (high)
//   Q4_1  d[16] m[16] | 4 x 64 bytes as Q4_0
//
// Stored values are unsigned (q ^ 0x80 = q + 128; nibbles 0..15; Q4_NL
// levels + 128), as the u8 x s8 instructions want; the offset times the
// block's activation sum is subtracted from the integer sum. Every path
// (512- and 256-bit VNNI, AVX2, portable) computes the same exact integer
// per block and then the same fused multiply-add, so results are identical
// on every target.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/kernels_packed.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/kernels_packed.h"
#include "core/quant.h"

#ifndef RWKV_KERNELS_PACKED_TRAITS
#define RWKV_KERNELS_PACKED_TRAITS
namespace rwkv::packed_detail {

inline constexpr int64_t kGroupRows = 16;

// What each packed type stores per group and block.
struct Traits {
  int64_t group_bytes;  // one block of sixteen rows
  int64_t quant_offset;  // where the quants start in it
  int32_t bias;          // stored value - true value (0 for Q4_1's plain nibbles)
  bool four_bit;
  bool affine;
};

constexpr Traits traits(DType t) {
  switch (t) {
    case DType::Q8_0: return {32 + 512, 32, 128, false, false};
    case DType::Q4_0: return {32 + 256, 32, 8, true, false};
    case DType::Q4_NL: return {32 + 256, 32, 128, true, false};
    case DType::Q4_1: return {64 + 256, 64, 0, true, true};
    default: return {0, 0, 0, false, false};
  }
}

// Q4_NL's levels + 128, as the unsigned bytes the packed kernels multiply.
inline constexpr uint8_t kQ4NlBiased[16] = {
    uint8_t(kQ4NlLevels[0] + 128),  uint8_t(kQ4NlLevels[1] + 128),  uint8_t(kQ4NlLevels[2] + 128),
    uint8_t(kQ4NlLevels[3] + 128),  uint8_t(kQ4NlLevels[4] + 128),  uint8_t(kQ4NlLevels[5] + 128),
    uint8_t(kQ4NlLevels[6] + 128),  uint8_t(kQ4NlLevels[7] + 128),  uint8_t(kQ4NlLevels[8] + 128),
    uint8_t(kQ4NlLevels[9] + 128),  uint8_t(kQ4NlLevels[10] + 128), uint8_t(kQ4NlLevels[11] + 128),
    uint8_t(kQ4NlLevels[12] + 128), uint8_t(kQ4NlLevels[13] + 128), uint8_t(kQ4NlLevels[14] + 128),
    uint8_t(kQ4NlLevels[15] + 128)};

}  // namespace rwkv::packed_detail
#endif

HWY_BEFORE_NAMESPACE();
namespace rwkv {
namespace HWY_NAMESPACE {

using packed_detail::traits;

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL

using packed_detail::kGroupRows;

HWY_INLINE __m256i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

#if HWY_TARGET == HWY_AVX3_DL
// AVX3_DL CPUs all have AVX512-VNNI; Highway 1.0's target string names only
// the VEX form (AVX-VNNI), so the instruction is written out.
HWY_INLINE __m512i Dot4x16(__m512i acc, __m512i w, __m512i x) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x));
  return acc;
}

// All sixteen rows of groups [g0, g1) in 512-bit vectors, kTile tokens at a
// time sharing each block's unpacked weights.
template <DType kType, int kTile>
void PackedRowsVnni512(const uint8_t* packed, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a,
                       int64_t n, float* y, int64_t ldy, int64_t rows) {
  constexpr auto T = traits(kType);
  const __m512i low4 = _mm512_set1_epi8(15);
  const __m512i nl_table = _mm512_broadcast_i32x4(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed_detail::kQ4NlBiased)));
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* group = packed + g * nb * T.group_bytes;
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const int nt = int(std::min<int64_t>(kTile, n - t0));
      __m512 acc[kTile];
      for (auto& v : acc) v = _mm512_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = group + b * T.group_bytes;
        if (t0 == 0) hwy::Prefetch(blk + 4 * T.group_bytes);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
        __m512i w[8];
        if constexpr (T.four_bit) {
          for (int k = 0; k < 4; ++k) {
            const __m512i q = _mm512_loadu_si512(blk + T.quant_offset + 64 * k);
            w[k] = _mm512_and_si512(q, low4);
            w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
            if constexpr (kType == DType::Q4_NL) {
              w[k] = _mm512_shuffle_epi8(nl_table, w[k]);
              w[k + 4] = _mm512_shuffle_epi8(nl_table, w[k + 4]);
            }
          }
        } else {
          for (int j = 0; j < 8; ++j) w[j] = _mm512_loadu_si512(blk + T.quant_offset + 64 * j);
        }
        for (int u = 0; u < nt; ++u) {
          const int64_t t = t0 + u;
          const int8_t* xb = a.xq + t * a.cols + 32 * b;
          __m512i s = _mm512_setzero_si512(), s_odd = _mm512_setzero_si512();
          for (int j = 0; j < 8; j += 2) {
            int32_t x0, x1;
            std::memcpy(&x0, xb + 4 * j, 4);
            std::memcpy(&x1, xb + 4 * j + 4, 4);
            s = Dot4x16(s, w[j], _mm512_set1_epi32(x0));
            s_odd = Dot4x16(s_odd, w[j + 1], _mm512_set1_epi32(x1));
          }
          s = _mm512_add_epi32(s, s_odd);
          if constexpr (T.bias != 0) s = _mm512_sub_epi32(s, _mm512_set1_epi32(T.bias * a.isum[t * nb + b]));
          const __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(a.dx[t * nb + b]));
          acc[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[u]);
          if constexpr (T.affine) {
            const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32)));
            acc[u] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.xsum[t * nb + b]), acc[u]);
          }
        }
      }
      const int64_t r0 = kGroupRows * g;
      const __mmask16 keep = r0 + kGroupRows <= rows ? __mmask16(0xffff) : __mmask16((1u << (rows - r0)) - 1);
      for (int u = 0; u < nt; ++u) _mm512_mask_storeu_ps(y + (t0 + u) * ldy + r0, keep, acc[u]);
    }
  }
}
#else
// acc + the four-byte dot products of unsigned w with signed x, per lane.
template <DType kType>
HWY_INLINE __m256i Dot4(__m256i acc, __m256i w, __m256i x) {
  if constexpr (traits(kType).four_bit && kType != DType::Q4_NL) {
    // nibbles <= 15: the 16-bit pair sums of maddubs cannot saturate
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)));
  } else {
    // 8-bit values: back to signed, then |w| times x with w's sign (|w| <= 127)
    const __m256i s = _mm256_xor_si256(w, _mm256_set1_epi8(char(0x80)));
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(s, s), _mm256_sign_epi8(x, s));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
}

// Whether Dot4 summed the stored (biased) values, whose bias must then be
// taken off with the activation sum.
template <DType kType>
constexpr bool kDotIsBiased = traits(kType).four_bit && kType != DType::Q4_NL;

// Groups [g0, g1) in 256-bit vectors, each group as two halves of eight rows,
// kTile tokens at a time sharing each block's unpacked weights.
template <DType kType, int kTile>
void PackedRowsAvx2(const uint8_t* packed, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a,
                    int64_t n, float* y, int64_t ldy, int64_t rows) {
  constexpr auto T = traits(kType);
  const __m256i low4 = _mm256_set1_epi8(15);
  const __m256i nl_table = _mm256_broadcastsi128_si256(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed_detail::kQ4NlBiased)));
  for (int64_t g = g0; g < g1; ++g)
    for (int half = 0; half < 2; ++half) {
      const int64_t r0 = kGroupRows * g + 8 * half;
      if (r0 >= rows) break;
      const uint8_t* group = packed + g * nb * T.group_bytes;
      for (int64_t t0 = 0; t0 < n; t0 += kTile) {
        const int nt = int(std::min<int64_t>(kTile, n - t0));
        __m256 acc[kTile];
        for (auto& v : acc) v = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = group + b * T.group_bytes;
          if (t0 == 0) hwy::Prefetch(blk + 4 * T.group_bytes + 32 * half);
          const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * half)));
          __m256i w[8];
          if constexpr (T.four_bit) {
            for (int k = 0; k < 4; ++k) {
              const __m256i q =
                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + T.quant_offset + 64 * k + 32 * half));
              w[k] = _mm256_and_si256(q, low4);
              w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
              if constexpr (kType == DType::Q4_NL) {
                w[k] = _mm256_shuffle_epi8(nl_table, w[k]);
                w[k + 4] = _mm256_shuffle_epi8(nl_table, w[k + 4]);
              }
            }
          } else {
            for (int j = 0; j < 8; ++j)
              w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + T.quant_offset + 64 * j + 32 * half));
          }
          // Element pairing: 8-bit chunk j holds elements 4j..4j+3; 4-bit chunk
          // k's low nibbles 4k.., its high nibbles 16+4k.. (w[k + 4]).
          for (int u = 0; u < nt; ++u) {
            const int64_t t = t0 + u;
            const int8_t* xb = a.xq + t * a.cols + 32 * b;
            // two independent chains of four (exact integer sums in any order)
            __m256i s = _mm256_setzero_si256(), s_odd = _mm256_setzero_si256();
            for (int j = 0; j < 8; j += 2) {
              s = Dot4<kType>(s, w[j], Broadcast4(xb + 4 * j));
              s_odd = Dot4<kType>(s_odd, w[j + 1], Broadcast4(xb + 4 * j + 4));
            }
            s = _mm256_add_epi32(s, s_odd);
            if constexpr (T.bias != 0 && kDotIsBiased<kType>)
              s = _mm256_sub_epi32(s, _mm256_set1_epi32(T.bias * a.isum[t * nb + b]));
            const __m256 scale = _mm256_mul_ps(d, _mm256_set1_ps(a.dx[t * nb + b]));
            acc[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[u]);
            if constexpr (T.affine) {
              const __m256 m =
                  _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32 + 16 * half)));
              acc[u] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.xsum[t * nb + b]), acc[u]);
            }
          }
        }
        for (int u = 0; u < nt; ++u) {
          float* yt = y + (t0 + u) * ldy + r0;
          if (r0 + 8 <= rows) {
            _mm256_storeu_ps(yt, acc[u]);
          } else {
            alignas(32) float lanes[8];
            _mm256_store_ps(lanes, acc[u]);
            for (int64_t r = 0; r < rows - r0; ++r) yt[r] = lanes[r];
          }
        }
      }
    }
}
#endif

template <DType kType>
void PackedRows(const uint8_t* packed, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a, int64_t n,
                float* y, int64_t ldy, int64_t rows) {
#if HWY_TARGET == HWY_AVX3_DL
  PackedRowsVnni512<kType, 8>(packed, nb, g0, g1, a, n, y, ldy, rows);
#elif HWY_TARGET == HWY_AVX2
  PackedRowsAvx2<kType, 4>(packed, nb, g0, g1, a, n, y, ldy, rows);  // 16 vector registers
#else
  PackedRowsAvx2<kType, 8>(packed, nb, g0, g1, a, n, y, ldy, rows);
#endif
}

#else  // portable: the same integers and the same fused multiply-adds, lane by lane

template <DType kType>
void PackedRows(const uint8_t* packed, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a, int64_t n,
                float* y, int64_t ldy, int64_t rows) {
  constexpr auto T = traits(kType);
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* group = packed + g * nb * T.group_bytes;
    for (int64_t t = 0; t < n; ++t) {
      float acc[packed_detail::kGroupRows] = {};
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = group + b * T.group_bytes;
        const int8_t* xb = a.xq + t * a.cols + 32 * b;
        for (int r = 0; r < packed_detail::kGroupRows; ++r) {
          int32_t s = 0;
          for (int e = 0; e < 32; ++e) {
            int32_t v;
            if constexpr (T.four_bit) {
              const int k = (e & 15) >> 2, i = e & 3;
              const uint8_t byte = blk[T.quant_offset + 64 * k + 4 * r + i];
              v = e < 16 ? byte & 15 : byte >> 4;
              if constexpr (kType == DType::Q4_NL) v = packed_detail::kQ4NlBiased[v];
            } else {
              v = blk[T.quant_offset + 64 * (e >> 2) + 4 * r + (e & 3)];
            }
            s += (v - T.bias) * int32_t(xb[e]);
          }
          uint16_t bits;
          std::memcpy(&bits, blk + 2 * r, 2);
          const float scale = f16_to_f32(bits) * a.dx[t * nb + b];
          acc[r] = std::fma(float(s), scale, acc[r]);
          if constexpr (T.affine) {
            std::memcpy(&bits, blk + 32 + 2 * r, 2);
            acc[r] = std::fma(f16_to_f32(bits), a.xsum[t * nb + b], acc[r]);
          }
        }
      }
      const int64_t r0 = packed_detail::kGroupRows * g;
      for (int64_t r = 0; r < packed_detail::kGroupRows && r0 + r < rows; ++r) y[t * ldy + r0 + r] = acc[r];
    }
  }
}

#endif

void PackedRowsQ8_0(const uint8_t* p, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a, int64_t n,
                    float* y, int64_t ldy, int64_t rows) {
  PackedRows<DType::Q8_0>(p, nb, g0, g1, a, n, y, ldy, rows);
}
void PackedRowsQ4_0(const uint8_t* p, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a, int64_t n,
                    float* y, int64_t ldy, int64_t rows) {
  PackedRows<DType::Q4_0>(p, nb, g0, g1, a, n, y, ldy, rows);
}
void PackedRowsQ4_1(const uint8_t* p, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a, int64_t n,
                    float* y, int64_t ldy, int64_t rows) {
  PackedRows<DType::Q4_1>(p, nb, g0, g1, a, n, y, ldy, rows);
}
void PackedRowsQ4_NL(const uint8_t* p, int64_t nb, int64_t g0, int64_t g1, const PackedActivations& a, int64_t n,
                     float* y, int64_t ldy, int64_t rows) {
  PackedRows<DType::Q4_NL>(p, nb, g0, g1, a, n, y, ldy, rows);
}

}  // namespace HWY_NAMESPACE
}  // namespace rwkv
HWY_AFTER_NAMESPACE();

#if HWY_ONCE

#include "core/error.h"
#include "core/thread_pool.h"

namespace rwkv {

HWY_EXPORT(PackedRowsQ8_0);
HWY_EXPORT(PackedRowsQ4_0);
HWY_EXPORT(PackedRowsQ4_1);
HWY_EXPORT(PackedRowsQ4_NL);

bool packable(DType t) { return packed_detail::traits(t).group_bytes != 0; }

size_t packed_bytes(const MatRef& w) {
  if (!packable(w.dtype)) return 0;
  const int64_t G = packed_detail::kGroupRows;
  return size_t((w.rows + G - 1) / G) * size_t(w.cols / 32) * size_t(packed_detail::traits(w.dtype).group_bytes);
}

std::vector<std::byte> pack_matrix(const MatRef& w) {
  if (!packable(w.dtype)) fail("matrices of {} cannot be repacked for the int8 kernels", dtype_name(w.dtype));
  if (w.cols % 32 != 0 || w.rows <= 0) fail("matrix [{}, {}] cannot be repacked", w.rows, w.cols);
  const auto T = packed_detail::traits(w.dtype);
  const int64_t G = packed_detail::kGroupRows;
  const int64_t nb = w.cols / 32, groups = (w.rows + G - 1) / G;
  const int64_t block_bytes = dtype_traits(w.dtype).block_bytes;
  const size_t row_bytes = w.row_bytes();
  std::vector<std::byte> out(packed_bytes(w));
  auto* dst = reinterpret_cast<uint8_t*>(out.data());
  const auto* src = static_cast<const uint8_t*>(w.data);
  thread_pool().parallel_for(groups, 64, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* blk = dst + (g * nb + b) * T.group_bytes;
        for (int64_t r = 0; r < G; ++r) {
          const uint8_t* in = src + size_t(std::min(G * g + r, w.rows - 1)) * row_bytes + b * block_bytes;
          std::memcpy(blk + 2 * r, in, 2);                            // d
          if (T.affine) std::memcpy(blk + 32 + 2 * r, in + 2, 2);     // m
          const uint8_t* qs = in + (T.affine ? 4 : 2);
          const int chunks = T.four_bit ? 4 : 8;
          for (int k = 0; k < chunks; ++k)
            for (int i = 0; i < 4; ++i) {
              const uint8_t q = qs[4 * k + i];
              blk[T.quant_offset + 64 * k + 4 * r + i] = T.four_bit ? q : uint8_t(q ^ 0x80);
            }
        }
      }
  });
  return out;
}

void packed_matmul(const MatRef& w, const PackedActivations& a, int64_t n, float* y) {
  const int64_t G = packed_detail::kGroupRows;
  const int64_t nb = w.cols / 32, groups = (w.rows + G - 1) / G;
  const int64_t group_bytes = nb * packed_detail::traits(w.dtype).group_bytes;
  // Enough weights per hand-off that it costs little next to the work.
  const int64_t parts = int64_t(thread_pool().size()) * 4;
  const int64_t chunk = std::max<int64_t>({1, 32768 / std::max<int64_t>(1, group_bytes), (groups + parts - 1) / parts});
  const auto* p = static_cast<const uint8_t*>(w.packed);
  auto run = [&](auto fn) {
    thread_pool().parallel_for(groups, chunk, [&](int64_t g0, int64_t g1) { fn(p, nb, g0, g1, a, n, y, w.rows, w.rows); });
  };
  switch (w.dtype) {
    case DType::Q8_0: return run(HWY_DYNAMIC_DISPATCH(PackedRowsQ8_0));
    case DType::Q4_0: return run(HWY_DYNAMIC_DISPATCH(PackedRowsQ4_0));
    case DType::Q4_1: return run(HWY_DYNAMIC_DISPATCH(PackedRowsQ4_1));
    case DType::Q4_NL: return run(HWY_DYNAMIC_DISPATCH(PackedRowsQ4_NL));
    default: fail("packed_matmul: {} is not a packed type", dtype_name(w.dtype));
  }
}

}  // namespace rwkv

#endif  // HWY_ONCE
