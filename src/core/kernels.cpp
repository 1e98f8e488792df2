// The SIMD part of this file is compiled once per instruction set by
// Highway's foreach_target (which re-includes the file); the plain C++ part
// (HWY_ONCE) dispatches to the best set the CPU has.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/kernels.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "core/kernels.h"
#include "core/quant.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Decoding streams every weight from memory once. For one row of X the float
// kernel reads rows one after another, a single stream the hardware
// prefetcher follows (measured: 0.1B fp16 decode at 1 thread went from ~75
// to ~105 tokens/s against the grouped kernel below). For several rows of X
// rows go in groups of four, and the hardware prefetchers lose track at
// each jump to the next group, so the kernels prefetch the next group
// themselves: while working through the current group, `done` bytes into
// it, they request the next group's bytes at the same proportion (without
// it batched decoding at B=8 was ~15% slower). `next` is null for the last
// group.
struct NextGroup {
  const uint8_t* next = nullptr;
  int64_t bytes = 0;  // of the next group
  HWY_INLINE void fetch(int64_t offset) const {
    if (next != nullptr && offset < bytes) {
      hwy::Prefetch(next + offset);
      if (offset + 64 < bytes) hwy::Prefetch(next + offset + 64);
    }
  }
};

HWY_INLINE NextGroup next_group(const void* w, int64_t row_bytes, int64_t g, int64_t r1) {
  NextGroup n;
  if (g + 4 < r1) {
    n.next = static_cast<const uint8_t*>(w) + (g + 4) * row_bytes;
    n.bytes = std::min<int64_t>(4, r1 - g - 4) * row_bytes;
  }
  return n;
}

// ---------------------------------------------------------------- float types
// Each Kind reads weights of one storage type: Load widens N of them into a
// float vector, Scalar one of them.

struct KindF32 {
  using T = float;
  template <class DF>
  static HWY_INLINE hn::Vec<DF> Load(DF df, const T* p) {
    return hn::LoadU(df, p);
  }
  static HWY_INLINE float Scalar(T v) { return v; }
};

struct KindF16 {
  using T = uint16_t;
  template <class DF>
  static HWY_INLINE hn::Vec<DF> Load(DF df, const T* p) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
  }
  static HWY_INLINE float Scalar(T v) { return f16_to_f32(v); }
};

struct KindBF16 {
  using T = uint16_t;
  template <class DF>
  static HWY_INLINE hn::Vec<DF> Load(DF df, const T* p) {
    const hn::Rebind<hwy::bfloat16_t, DF> db;
    return hn::PromoteTo(df, hn::LoadU(db, reinterpret_cast<const hwy::bfloat16_t*>(p)));
  }
  static HWY_INLINE float Scalar(T v) { return bf16_to_f32(v); }
};

// One row of X (decoding): rows one after another, a single sequential
// stream for the hardware prefetcher, each summed exactly as FloatRows below
// sums it (two accumulators alternating over vectors, one leftover vector, then
// the scalar tail), so results equal the batched kernel's bit for bit.
template <class Kind>
void FloatRowsSingle(const void* wv, int64_t cols, int64_t r0, int64_t r1, const float* x, float* y) {
  using T = typename Kind::T;
  const hn::ScalableTag<float> df;
  const int64_t N = int64_t(hn::Lanes(df));
  const T* w = static_cast<const T*>(wv);
  for (int64_t r = r0; r < r1; ++r) {
    const T* wr = w + r * cols;
    auto a = hn::Zero(df), b = a;
    int64_t c = 0;
    for (; c + 2 * N <= cols; c += 2 * N) {
      a = hn::MulAdd(Kind::Load(df, wr + c), hn::LoadU(df, x + c), a);
      b = hn::MulAdd(Kind::Load(df, wr + c + N), hn::LoadU(df, x + c + N), b);
    }
    if (c + N <= cols) {
      a = hn::MulAdd(Kind::Load(df, wr + c), hn::LoadU(df, x + c), a);
      c += N;
    }
    float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(a, b)));
    for (; c < cols; ++c) s += Kind::Scalar(wr[c]) * x[c];
    y[r] = s;
  }
}

// Rows [r0, r1) of Y[t, r] = W[r] . X[t] for t < n (Y row stride ldy).
// Rows go in groups of four sharing each load of x; a group past r1 repeats
// row r1 - 1 and drops the extra results. Every row is summed the same way
// (two vector accumulators, one leftover vector, then a scalar tail) wherever
// it falls, which is what makes results independent of the row split.
template <class Kind>
void FloatRows(const void* wv, int64_t cols, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
               int64_t ldy) {
  using T = typename Kind::T;
  if (n == 1) return FloatRowsSingle<Kind>(wv, cols, r0, r1, x, y);
  const hn::ScalableTag<float> df;
  const int64_t N = int64_t(hn::Lanes(df));
  const T* w = static_cast<const T*>(wv);
  for (int64_t g = r0; g < r1; g += 4) {
    const T* w0 = w + g * cols;
    const T* w1 = w + std::min(g + 1, r1 - 1) * cols;
    const T* w2 = w + std::min(g + 2, r1 - 1) * cols;
    const T* w3 = w + std::min(g + 3, r1 - 1) * cols;
    const NextGroup ahead = next_group(w, cols * int64_t(sizeof(T)), g, r1);
    // Two rows of X at a time share each widened weight vector (widening
    // fp16/bf16 costs as much as the multiply-add); each (row, x) sum is
    // still formed exactly as above. An odd last row of X is paired with
    // itself and its duplicate results dropped.
    for (int64_t t = 0; t < n; t += 2) {
      const float* xt = x + t * cols;
      const float* xu = t + 1 < n ? xt + cols : xt;
      auto a0 = hn::Zero(df), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      auto c0 = a0, c1 = a0, c2 = a0, c3 = a0, d0 = a0, d1 = a0, d2 = a0, d3 = a0;  // row xu
      int64_t c = 0;
      for (; c + 2 * N <= cols; c += 2 * N) {
        if (t == 0) {  // 4 rows x 2N weights here; the same share of the next group
          const int64_t at = c * 4 * int64_t(sizeof(T)), step = 2 * N * 4 * int64_t(sizeof(T));
          for (int64_t o = at; o < at + step; o += 128) ahead.fetch(o);
        }
        const auto xa = hn::LoadU(df, xt + c), xb = hn::LoadU(df, xt + c + N);
        const auto ua = hn::LoadU(df, xu + c), ub = hn::LoadU(df, xu + c + N);
        const auto w0a = Kind::Load(df, w0 + c), w1a = Kind::Load(df, w1 + c);
        const auto w2a = Kind::Load(df, w2 + c), w3a = Kind::Load(df, w3 + c);
        a0 = hn::MulAdd(w0a, xa, a0);
        a1 = hn::MulAdd(w1a, xa, a1);
        a2 = hn::MulAdd(w2a, xa, a2);
        a3 = hn::MulAdd(w3a, xa, a3);
        c0 = hn::MulAdd(w0a, ua, c0);
        c1 = hn::MulAdd(w1a, ua, c1);
        c2 = hn::MulAdd(w2a, ua, c2);
        c3 = hn::MulAdd(w3a, ua, c3);
        const auto w0b = Kind::Load(df, w0 + c + N), w1b = Kind::Load(df, w1 + c + N);
        const auto w2b = Kind::Load(df, w2 + c + N), w3b = Kind::Load(df, w3 + c + N);
        b0 = hn::MulAdd(w0b, xb, b0);
        b1 = hn::MulAdd(w1b, xb, b1);
        b2 = hn::MulAdd(w2b, xb, b2);
        b3 = hn::MulAdd(w3b, xb, b3);
        d0 = hn::MulAdd(w0b, ub, d0);
        d1 = hn::MulAdd(w1b, ub, d1);
        d2 = hn::MulAdd(w2b, ub, d2);
        d3 = hn::MulAdd(w3b, ub, d3);
      }
      if (c + N <= cols) {
        const auto xa = hn::LoadU(df, xt + c), ua = hn::LoadU(df, xu + c);
        const auto w0a = Kind::Load(df, w0 + c), w1a = Kind::Load(df, w1 + c);
        const auto w2a = Kind::Load(df, w2 + c), w3a = Kind::Load(df, w3 + c);
        a0 = hn::MulAdd(w0a, xa, a0);
        a1 = hn::MulAdd(w1a, xa, a1);
        a2 = hn::MulAdd(w2a, xa, a2);
        a3 = hn::MulAdd(w3a, xa, a3);
        c0 = hn::MulAdd(w0a, ua, c0);
        c1 = hn::MulAdd(w1a, ua, c1);
        c2 = hn::MulAdd(w2a, ua, c2);
        c3 = hn::MulAdd(w3a, ua, c3);
        c += N;
      }
      float s0 = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, b0)));
      float s1 = hn::GetLane(hn::SumOfLanes(df, hn::Add(a1, b1)));
      float s2 = hn::GetLane(hn::SumOfLanes(df, hn::Add(a2, b2)));
      float s3 = hn::GetLane(hn::SumOfLanes(df, hn::Add(a3, b3)));
      float u0 = hn::GetLane(hn::SumOfLanes(df, hn::Add(c0, d0)));
      float u1 = hn::GetLane(hn::SumOfLanes(df, hn::Add(c1, d1)));
      float u2 = hn::GetLane(hn::SumOfLanes(df, hn::Add(c2, d2)));
      float u3 = hn::GetLane(hn::SumOfLanes(df, hn::Add(c3, d3)));
      for (; c < cols; ++c) {
        const float xc = xt[c], uc = xu[c];
        s0 += Kind::Scalar(w0[c]) * xc;
        s1 += Kind::Scalar(w1[c]) * xc;
        s2 += Kind::Scalar(w2[c]) * xc;
        s3 += Kind::Scalar(w3[c]) * xc;
        u0 += Kind::Scalar(w0[c]) * uc;
        u1 += Kind::Scalar(w1[c]) * uc;
        u2 += Kind::Scalar(w2[c]) * uc;
        u3 += Kind::Scalar(w3[c]) * uc;
      }
      const float sums[2][4] = {{s0, s1, s2, s3}, {u0, u1, u2, u3}};
      for (int64_t k = 0; k < 2 && t + k < n; ++k) {
        float* yt = y + (t + k) * ldy;
        for (int64_t i = 0; i < 4 && g + i < r1; ++i) yt[g + i] = sums[k][i];
      }
    }
  }
}

template <class Kind>
void FloatDecode(const void* wv, int64_t n, float* out) {
  using T = typename Kind::T;
  const hn::ScalableTag<float> df;
  const int64_t N = int64_t(hn::Lanes(df));
  const T* w = static_cast<const T*>(wv);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(Kind::Load(df, w + i), df, out + i);
  for (; i < n; ++i) out[i] = Kind::Scalar(w[i]);
}

// ------------------------------------------------------------ quantized types
// Each block type provides Values(df, block, j): the block's integers minus
// their offset, as floats, for elements [j, j + N); N divides 16. The weights
// are d * Values (+ m for the affine types).

template <class DF>
HWY_INLINE hn::Vec<DF> BroadcastHalf(DF df, const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  const hn::Rebind<uint16_t, DF> du16;
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(df, hn::BitCast(dh, hn::Set(du16, bits)));
}

// The 4 low bits of element j: low nibbles for j < 16, high ones above.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> Nibbles(DF, const uint8_t* qs, size_t j) {
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  const auto q = hn::PromoteTo(di, hn::LoadU(du8, qs + (j & 15)));
  return j < 16 ? hn::And(q, hn::Set(di, 15)) : hn::ShiftRight<4>(q);
}

// Bit 4 of elements [j, j + N), from the 32-bit mask qh.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> HighBits(DF, const uint8_t* qh_bytes, size_t j) {
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  const auto bits = hn::And(hn::Set(du, qh) >> hn::Iota(du, uint32_t(j)), hn::Set(du, 1u));
  return hn::BitCast(di, hn::ShiftLeft<4>(bits));
}

struct BlockQ8_0 {
  static constexpr DType kType = DType::Q8_0;
  static constexpr bool kAffine = false;
  template <class DF>
  static HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> IntValues(DF, const uint8_t* b, size_t j) {
    const hn::RebindToSigned<DF> di;
    const hn::Rebind<int8_t, DF> di8;
    return hn::PromoteTo(di, hn::LoadU(di8, reinterpret_cast<const int8_t*>(b + 2) + j));
  }
};

struct BlockQ4_0 {
  static constexpr DType kType = DType::Q4_0;
  static constexpr bool kAffine = false;
  template <class DF>
  static HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> IntValues(DF df, const uint8_t* b, size_t j) {
    const hn::RebindToSigned<DF> di;
    return hn::Sub(Nibbles(df, b + 2, j), hn::Set(di, 8));
  }
};

struct BlockQ4_1 {
  static constexpr DType kType = DType::Q4_1;
  static constexpr bool kAffine = true;
  template <class DF>
  static HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> IntValues(DF df, const uint8_t* b, size_t j) {
    return Nibbles(df, b + 4, j);
  }
};

struct BlockQ5_0 {
  static constexpr DType kType = DType::Q5_0;
  static constexpr bool kAffine = false;
  template <class DF>
  static HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> IntValues(DF df, const uint8_t* b, size_t j) {
    const hn::RebindToSigned<DF> di;
    return hn::Sub(hn::Or(Nibbles(df, b + 6, j), HighBits(df, b + 2, j)), hn::Set(di, 16));
  }
};

struct BlockQ5_1 {
  static constexpr DType kType = DType::Q5_1;
  static constexpr bool kAffine = true;
  template <class DF>
  static HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> IntValues(DF df, const uint8_t* b, size_t j) {
    return hn::Or(Nibbles(df, b + 8, j), HighBits(df, b + 4, j));
  }
};

// Q4_NL: each nibble indexes the codebook kQ4NlLevels (core/quant.h), looked
// up sixteen bytes at a time with a byte shuffle.
struct BlockQ4_NL {
  static constexpr DType kType = DType::Q4_NL;
  static constexpr bool kAffine = false;
  template <class DF>
  static HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> IntValues(DF, const uint8_t* b, size_t j) {
    const hn::RebindToSigned<DF> di;
#if HWY_TARGET == HWY_SCALAR
    const uint8_t byte = b[2 + (j & 15)];
    return hn::Set(di, int32_t(kQ4NlLevels[j < 16 ? byte & 15 : byte >> 4]));
#else
    const hn::Full128<int8_t> d16;
    const hn::Rebind<uint8_t, DF> du8;
    const hn::Rebind<int8_t, DF> di8;
    auto index = hn::LoadU(du8, b + 2 + (j & 15));
    index = j < 16 ? hn::And(index, hn::Set(du8, uint8_t(15))) : hn::ShiftRight<4>(index);
    const auto levels = hn::LoadU(d16, kQ4NlLevels);
    return hn::PromoteTo(di, hn::TableLookupBytes(levels, hn::BitCast(di8, index)));
#endif
  }
};

template <class Block, class DF>
HWY_INLINE hn::Vec<DF> Values(DF df, const uint8_t* b, size_t j) {
  return hn::ConvertTo(df, Block::IntValues(df, b, j));
}

// acc + d * (Values . x[0, 32)) for one block.
template <class Block, class DF>
HWY_INLINE hn::Vec<DF> BlockDot(DF df, const uint8_t* b, const float* xb, hn::Vec<DF> acc) {
  const size_t N = hn::Lanes(df);
  auto dot = hn::Mul(Values<Block>(df, b, 0), hn::LoadU(df, xb));
  for (size_t j = N; j < 32; j += N) dot = hn::MulAdd(Values<Block>(df, b, j), hn::LoadU(df, xb + j), dot);
  return hn::MulAdd(BroadcastHalf(df, b), dot, acc);
}

// As FloatRows, for a quantized type: per block, the four rows' dot products
// with x are scaled by their d; the affine types add m * sum(x over the
// block), with the block sums of each row of X precomputed in xsum[n, cols / 32].
template <class Block>
void QuantRows(const void* wv, int64_t cols, int64_t r0, int64_t r1, const float* x, const float* xsum, int64_t n,
               float* y, int64_t ldy) {
  const hn::CappedTag<float, 16> df;
  const int64_t nb = cols / 32;
  constexpr int64_t kBytes = dtype_traits(Block::kType).block_bytes;
  const int64_t row_bytes = nb * kBytes;
  const uint8_t* w = static_cast<const uint8_t*>(wv);
  for (int64_t g = r0; g < r1; g += 4) {
    const uint8_t* w0 = w + g * row_bytes;
    const uint8_t* w1 = w + std::min(g + 1, r1 - 1) * row_bytes;
    const uint8_t* w2 = w + std::min(g + 2, r1 - 1) * row_bytes;
    const uint8_t* w3 = w + std::min(g + 3, r1 - 1) * row_bytes;
    const NextGroup ahead = next_group(w, row_bytes, g, r1);
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * cols;
      auto a0 = hn::Zero(df), a1 = a0, a2 = a0, a3 = a0;
      auto m0 = a0, m1 = a0, m2 = a0, m3 = a0;  // affine types: sum of m * block sum of x
      for (int64_t k = 0; k < nb; ++k) {
        if (t == 0) ahead.fetch(4 * k * kBytes);  // 4 blocks here, 4 of the next group (<= 2 lines)
        const float* xb = xt + 32 * k;
        const int64_t o = k * kBytes;
        a0 = BlockDot<Block>(df, w0 + o, xb, a0);
        a1 = BlockDot<Block>(df, w1 + o, xb, a1);
        a2 = BlockDot<Block>(df, w2 + o, xb, a2);
        a3 = BlockDot<Block>(df, w3 + o, xb, a3);
        if constexpr (Block::kAffine) {
          const auto s = hn::Set(df, xsum[t * nb + k]);
          m0 = hn::MulAdd(BroadcastHalf(df, w0 + o + 2), s, m0);
          m1 = hn::MulAdd(BroadcastHalf(df, w1 + o + 2), s, m1);
          m2 = hn::MulAdd(BroadcastHalf(df, w2 + o + 2), s, m2);
          m3 = hn::MulAdd(BroadcastHalf(df, w3 + o + 2), s, m3);
        }
      }
      float* yt = y + t * ldy;
      yt[g] = hn::GetLane(hn::SumOfLanes(df, a0)) + hn::GetLane(m0);
      if (g + 1 < r1) yt[g + 1] = hn::GetLane(hn::SumOfLanes(df, a1)) + hn::GetLane(m1);
      if (g + 2 < r1) yt[g + 2] = hn::GetLane(hn::SumOfLanes(df, a2)) + hn::GetLane(m2);
      if (g + 3 < r1) yt[g + 3] = hn::GetLane(hn::SumOfLanes(df, a3)) + hn::GetLane(m3);
    }
  }
}

// Decodes n weights (whole blocks), exactly as dequantize_row does: d * q
// (+ m), each a separately rounded float operation.
template <class Block>
void QuantDecode(const void* wv, int64_t n, float* out) {
  const hn::CappedTag<float, 16> df;
  const size_t N = hn::Lanes(df);
  constexpr int64_t kBytes = dtype_traits(Block::kType).block_bytes;
  const uint8_t* b = static_cast<const uint8_t*>(wv);
  for (int64_t i = 0; i < n; i += 32, b += kBytes) {
    const auto d = BroadcastHalf(df, b);
    const auto m = Block::kAffine ? BroadcastHalf(df, b + 2) : hn::Zero(df);
    for (size_t j = 0; j < 32; j += N) {
      auto v = hn::Mul(Values<Block>(df, b, j), d);
      if constexpr (Block::kAffine) v = hn::Add(v, m);
      hn::StoreU(v, df, out + i + int64_t(j));
    }
  }
}

// ------------------------------- quantized weights x int8 activations (Q8)
// As ggml does: each 32-block of x becomes int8 q = round(x / dx) with
// dx = absmax / 127, so a block's dot product is an exact integer sum,
// scaled by d * dx. Costs one activation rounding (relative 1/254 of the
// block's largest value per element) and runs several times faster than
// decoding weights to float.

// xq[n] (n a multiple of 32), and per block dx and xsum = dx * sum(q), the
// block sum of the rounded x, for the affine types' m term: with it every
// weight d q + m meets the same rounded x, so the error is that of rounding
// x alone, bounded by sum |w| dx / 2 per block.
void QuantizeActivations(const float* x, int64_t n, int8_t* xq, float* dx, int32_t* isums, float* xsum) {
  const hn::CappedTag<float, 16> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> di8;
  const size_t N = hn::Lanes(df);
  for (int64_t k = 0; k < n / 32; ++k) {
    const float* xb = x + 32 * k;
    auto amax = hn::Zero(df);
    for (size_t j = 0; j < 32; j += N) amax = hn::Max(amax, hn::Abs(hn::LoadU(df, xb + j)));
    const float a = hn::GetLane(hn::MaxOfLanes(df, amax));
    const float d = a / 127.0f;
    const auto id = hn::Set(df, d != 0.0f ? 1.0f / d : 0.0f);
    auto isum = hn::Zero(di);
    for (size_t j = 0; j < 32; j += N) {
      const auto q = hn::NearestInt(hn::Mul(hn::LoadU(df, xb + j), id));  // within [-127, 127]
      isum = hn::Add(isum, q);
      hn::StoreU(hn::DemoteTo(di8, q), di8, xq + 32 * k + j);
    }
    const int32_t total = hn::GetLane(hn::SumOfLanes(di, isum));
    dx[k] = d;
    isums[k] = total;
    xsum[k] = d * float(total);
  }
}

HWY_INLINE float HalfAt(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define RWKV_X86_INT8 1

HWY_INLINE float HalfToFloat(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

// The 32 nibbles of a block in element order: low nibbles, then high ones.
HWY_INLINE __m256i Nibbles32(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// 0x10 in byte j where bit j of the block's qh is set: byte j gets the qh
// byte holding bit j (a shuffle within each 128-bit half), then a test of
// that bit (OR with all other bits set, compare with all ones).
HWY_INLINE __m256i HighBits32(const uint8_t* qh_bytes) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  const __m256i spread = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                                            0x0303030303030303);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)), spread);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  bytes = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
  return _mm256_and_si256(bytes, _mm256_set1_epi8(0x10));
}

// The 32 integers of a block as bytes: signed (q - offset) for the
// symmetric types, unsigned q for the affine ones.
template <class Block>
HWY_INLINE __m256i Bytes32(const uint8_t* b) {
  if constexpr (Block::kType == DType::Q8_0) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
  if constexpr (Block::kType == DType::Q4_0) return _mm256_sub_epi8(Nibbles32(b + 2), _mm256_set1_epi8(8));
  if constexpr (Block::kType == DType::Q4_1) return Nibbles32(b + 4);
  if constexpr (Block::kType == DType::Q5_0)
    return _mm256_sub_epi8(_mm256_or_si256(Nibbles32(b + 6), HighBits32(b + 2)), _mm256_set1_epi8(16));
  if constexpr (Block::kType == DType::Q5_1) return _mm256_or_si256(Nibbles32(b + 8), HighBits32(b + 4));
  if constexpr (Block::kType == DType::Q4_NL) {
    const __m256i levels =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kQ4NlLevels)));
    return _mm256_shuffle_epi8(levels, Nibbles32(b + 2));
  }
  return _mm256_setzero_si256();
}

// Eight int32 partial sums of u[i] * s[i] (u unsigned, s signed bytes; the
// 16-bit pair sums cannot saturate: |u| <= 128 with |s| <= 127, or u <= 31).
HWY_INLINE __m256i DotU8I8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

template <class Block>
HWY_INLINE __m256i BlockDotQ8(__m256i w, __m256i x) {
  if constexpr (Block::kAffine) return DotU8I8(w, x);
  // signed x signed: |w| times x with w's sign
  return DotU8I8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

HWY_INLINE float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
#endif

// Rows [r0, r1) of Y[t, r] = W[r] . X[t] from the quantized activations;
// groups of four rows as in FloatRows.
template <class Block>
void QuantRowsQ8(const void* wv, int64_t cols, int64_t r0, int64_t r1, const int8_t* xq, const float* dx,
                 const float* xsum, int64_t n, float* y, int64_t ldy) {
  const int64_t nb = cols / 32;
  constexpr int64_t kBytes = dtype_traits(Block::kType).block_bytes;
  const int64_t row_bytes = nb * kBytes;
  const uint8_t* w = static_cast<const uint8_t*>(wv);
  for (int64_t g = r0; g < r1; g += 4) {
    const uint8_t* rows[4];
    for (int64_t i = 0; i < 4; ++i) rows[i] = w + std::min(g + i, r1 - 1) * row_bytes;
    const NextGroup ahead = next_group(w, row_bytes, g, r1);
#ifdef RWKV_X86_INT8
    // Up to four rows of X at a time share each block's unpacked weights and
    // scales (batched decoding); every (row, x) sum is still accumulated block
    // by block in the same order with the same operations, so results do not
    // depend on how many rows of X come together.
    for (int64_t t0 = 0; t0 < n; t0 += 4) {
      const int64_t nt = std::min<int64_t>(4, n - t0);
      __m256 acc[4][4];
      float macc[4][4] = {};
      for (auto& per_x : acc)
        for (auto& a : per_x) a = _mm256_setzero_ps();
      for (int64_t k = 0; k < nb; ++k) {
        if (t0 == 0) ahead.fetch(4 * k * kBytes);
        __m256i wq[4];
        float wd[4], wm[4] = {};
        for (int i = 0; i < 4; ++i) {
          const uint8_t* b = rows[i] + k * kBytes;
          wq[i] = Bytes32<Block>(b);
          wd[i] = HalfToFloat(b);
          if constexpr (Block::kAffine) wm[i] = HalfToFloat(b + 2);
        }
        for (int64_t u = 0; u < nt; ++u) {
          const int64_t t = t0 + u;
          const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * cols + 32 * k));
          const float d = dx[t * nb + k];
          for (int i = 0; i < 4; ++i) {
            const __m256 scale = _mm256_set1_ps(wd[i] * d);
            acc[u][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(BlockDotQ8<Block>(wq[i], x)), scale, acc[u][i]);
            if constexpr (Block::kAffine) macc[u][i] += wm[i] * xsum[t * nb + k];
          }
        }
      }
      for (int64_t u = 0; u < nt; ++u) {
        float* yt = y + (t0 + u) * ldy;
        for (int64_t i = 0; i < 4 && g + i < r1; ++i) yt[g + i] = HorizontalSum(acc[u][i]) + macc[u][i];
      }
    }
#else
    for (int64_t t = 0; t < n; ++t) {
      const int8_t* xt = xq + t * cols;
      const float* dt = dx + t * nb;
      const float* st = xsum + t * nb;
      float sums[4];
      // Portable: the same integer block sums with Highway vectors.
      const hn::CappedTag<float, 16> df;
      const hn::RebindToSigned<decltype(df)> di;
      const hn::Rebind<int8_t, decltype(df)> di8;
      const size_t N = hn::Lanes(df);
      for (int i = 0; i < 4; ++i) {
        float s = 0.0f;
        for (int64_t k = 0; k < nb; ++k) {
          if (t == 0 && i == 0) ahead.fetch(4 * k * kBytes);
          const uint8_t* b = rows[i] + k * kBytes;
          auto isum = hn::Zero(di);
          for (size_t j = 0; j < 32; j += N)
            isum = hn::Add(isum, hn::Mul(Block::IntValues(df, b, j), hn::PromoteTo(di, hn::LoadU(di8, xt + 32 * k + j))));
          s += HalfAt(b) * dt[k] * float(hn::GetLane(hn::SumOfLanes(di, isum)));
          if constexpr (Block::kAffine) s += HalfAt(b + 2) * st[k];
        }
        sums[i] = s;
      }
      float* yt = y + t * ldy;
      for (int64_t i = 0; i < 4 && g + i < r1; ++i) yt[g + i] = sums[i];
    }
#endif
  }
}

// x = max(x, 0)^2, the RWKV channel mix's activation. As a vector kernel it
// has no branch to mispredict on the activations' random signs.
void ReluSquare(float* x, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t N = int64_t(hn::Lanes(df));
  const auto zero = hn::Zero(df);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::Max(hn::LoadU(df, x + i), zero);
    hn::StoreU(hn::Mul(v, v), df, x + i);
  }
  for (; i < n; ++i) {
    const float v = x[i] > 0.0f ? x[i] : 0.0f;
    x[i] = v * v;
  }
}

// Multiply-adds of `iterations` x 12 independent vectors; returns their sum
// (so the work is not optimised away). Twelve chains cover the latency of
// the FMA units of current x86 cores.
float FmaLoop(int64_t iterations) {
  const hn::ScalableTag<float> df;
  const auto m = hn::Set(df, 0.999999f), c = hn::Set(df, 1e-7f);
  auto a0 = hn::Set(df, 1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  auto a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  for (int64_t i = 0; i < iterations; ++i) {
    a0 = hn::MulAdd(a0, m, c);
    a1 = hn::MulAdd(a1, m, c);
    a2 = hn::MulAdd(a2, m, c);
    a3 = hn::MulAdd(a3, m, c);
    a4 = hn::MulAdd(a4, m, c);
    a5 = hn::MulAdd(a5, m, c);
    a6 = hn::MulAdd(a6, m, c);
    a7 = hn::MulAdd(a7, m, c);
    a8 = hn::MulAdd(a8, m, c);
    a9 = hn::MulAdd(a9, m, c);
    a10 = hn::MulAdd(a10, m, c);
    a11 = hn::MulAdd(a11, m, c);
  }
  const auto sum = hn::Add(hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7))),
                           hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)));
  return hn::GetLane(hn::SumOfLanes(df, sum));
}

int64_t FloatLanes() { return int64_t(hn::Lanes(hn::ScalableTag<float>())); }

// ------------------------------------------------- per-type entry points
// One signature for all types so the dispatcher can pick from a table;
// xsum is used by the affine quantized types only.

#define RWKV_FLOAT_ENTRY(NAME, KIND)                                                                              \
  void Rows##NAME(const void* w, int64_t cols, int64_t r0, int64_t r1, const float* x, const float*, int64_t n, \
                  float* y, int64_t ldy) {                                                                      \
    FloatRows<KIND>(w, cols, r0, r1, x, n, y, ldy);                                                             \
  }                                                                                                             \
  void Decode##NAME(const void* w, int64_t n, float* out) { FloatDecode<KIND>(w, n, out); }

#define RWKV_QUANT_ENTRY(NAME, BLOCK)                                                                              \
  void Rows##NAME(const void* w, int64_t cols, int64_t r0, int64_t r1, const float* x, const float* xsum,         \
                  int64_t n, float* y, int64_t ldy) {                                                            \
    QuantRows<BLOCK>(w, cols, r0, r1, x, xsum, n, y, ldy);                                                       \
  }                                                                                                              \
  void Decode##NAME(const void* w, int64_t n, float* out) { QuantDecode<BLOCK>(w, n, out); }                    \
  void Rows##NAME##Q8(const void* w, int64_t cols, int64_t r0, int64_t r1, const int8_t* xq, const float* dx,    \
                      const float* xsum, int64_t n, float* y, int64_t ldy) {                                     \
    QuantRowsQ8<BLOCK>(w, cols, r0, r1, xq, dx, xsum, n, y, ldy);                                                \
  }

RWKV_FLOAT_ENTRY(F32, KindF32)
RWKV_FLOAT_ENTRY(F16, KindF16)
RWKV_FLOAT_ENTRY(BF16, KindBF16)
RWKV_QUANT_ENTRY(Q8_0, BlockQ8_0)
RWKV_QUANT_ENTRY(Q4_0, BlockQ4_0)
RWKV_QUANT_ENTRY(Q4_1, BlockQ4_1)
RWKV_QUANT_ENTRY(Q5_0, BlockQ5_0)
RWKV_QUANT_ENTRY(Q5_1, BlockQ5_1)
RWKV_QUANT_ENTRY(Q4_NL, BlockQ4_NL)

#undef RWKV_FLOAT_ENTRY
#undef RWKV_QUANT_ENTRY
#ifdef RWKV_X86_INT8
#undef RWKV_X86_INT8
#endif

}  // namespace HWY_NAMESPACE
}  // namespace rwkv
HWY_AFTER_NAMESPACE();

#if HWY_ONCE

#include <cblas.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/kernels_packed.h"
#include "core/thread_pool.h"

namespace rwkv {

HWY_EXPORT(RowsF32);
HWY_EXPORT(RowsF16);
HWY_EXPORT(RowsBF16);
HWY_EXPORT(RowsQ8_0);
HWY_EXPORT(RowsQ4_0);
HWY_EXPORT(RowsQ4_1);
HWY_EXPORT(RowsQ5_0);
HWY_EXPORT(RowsQ5_1);
HWY_EXPORT(RowsQ4_NL);
HWY_EXPORT(DecodeF32);
HWY_EXPORT(DecodeF16);
HWY_EXPORT(DecodeBF16);
HWY_EXPORT(DecodeQ8_0);
HWY_EXPORT(DecodeQ4_0);
HWY_EXPORT(DecodeQ4_1);
HWY_EXPORT(DecodeQ5_0);
HWY_EXPORT(DecodeQ5_1);
HWY_EXPORT(DecodeQ4_NL);
HWY_EXPORT(QuantizeActivations);
HWY_EXPORT(ReluSquare);
HWY_EXPORT(FmaLoop);
HWY_EXPORT(FloatLanes);
HWY_EXPORT(RowsQ8_0Q8);
HWY_EXPORT(RowsQ4_0Q8);
HWY_EXPORT(RowsQ4_1Q8);
HWY_EXPORT(RowsQ5_0Q8);
HWY_EXPORT(RowsQ5_1Q8);
HWY_EXPORT(RowsQ4_NLQ8);

namespace {

void rows(const MatRef& w, int64_t r0, int64_t r1, const float* x, const float* xsum, int64_t n, float* y) {
  const int64_t ldy = w.rows;
  switch (w.dtype) {
    case DType::F32: return HWY_DYNAMIC_DISPATCH(RowsF32)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::F16: return HWY_DYNAMIC_DISPATCH(RowsF16)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::BF16: return HWY_DYNAMIC_DISPATCH(RowsBF16)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::Q8_0: return HWY_DYNAMIC_DISPATCH(RowsQ8_0)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::Q4_0: return HWY_DYNAMIC_DISPATCH(RowsQ4_0)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::Q4_1: return HWY_DYNAMIC_DISPATCH(RowsQ4_1)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::Q5_0: return HWY_DYNAMIC_DISPATCH(RowsQ5_0)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::Q5_1: return HWY_DYNAMIC_DISPATCH(RowsQ5_1)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
    case DType::Q4_NL: return HWY_DYNAMIC_DISPATCH(RowsQ4_NL)(w.data, w.cols, r0, r1, x, xsum, n, y, ldy);
  }
}

// Decodes rows [r0, r1) of W into out[(r1 - r0) * cols].
void decode_rows(const MatRef& w, int64_t r0, int64_t r1, float* out) {
  const auto* src = static_cast<const char*>(w.data) + size_t(r0) * w.row_bytes();
  const int64_t n = (r1 - r0) * w.cols;
  switch (w.dtype) {
    case DType::F32: return HWY_DYNAMIC_DISPATCH(DecodeF32)(src, n, out);
    case DType::F16: return HWY_DYNAMIC_DISPATCH(DecodeF16)(src, n, out);
    case DType::BF16: return HWY_DYNAMIC_DISPATCH(DecodeBF16)(src, n, out);
    case DType::Q8_0: return HWY_DYNAMIC_DISPATCH(DecodeQ8_0)(src, n, out);
    case DType::Q4_0: return HWY_DYNAMIC_DISPATCH(DecodeQ4_0)(src, n, out);
    case DType::Q4_1: return HWY_DYNAMIC_DISPATCH(DecodeQ4_1)(src, n, out);
    case DType::Q5_0: return HWY_DYNAMIC_DISPATCH(DecodeQ5_0)(src, n, out);
    case DType::Q5_1: return HWY_DYNAMIC_DISPATCH(DecodeQ5_1)(src, n, out);
    case DType::Q4_NL: return HWY_DYNAMIC_DISPATCH(DecodeQ4_NL)(src, n, out);
  }
}

void check(const MatRef& w) {
  const int64_t block = dtype_traits(w.dtype).block_size;
  if (w.rows < 0 || w.cols < 0 || w.cols % block != 0)
    fail("matrix of {} with shape [{}, {}]: columns must be a multiple of the block size {}", dtype_name(w.dtype),
         w.rows, w.cols, block);
}

// Rows per parallel chunk for the vector kernels: enough bytes that the
// hand-off costs little next to the work, in whole groups of four.
int64_t min_rows_per_chunk(const MatRef& w) {
  const int64_t r = int64_t(32768 / std::max<size_t>(1, w.row_bytes()));
  return std::max<int64_t>(4, (r + 3) / 4 * 4);
}

std::atomic<QuantDot> g_quant_dot{QuantDot::Q8Activations};

void rows_q8(const MatRef& w, int64_t r0, int64_t r1, const int8_t* xq, const float* dx, const float* xsum,
             int64_t n, float* y) {
  const int64_t ldy = w.rows;
  switch (w.dtype) {
    case DType::Q8_0: return HWY_DYNAMIC_DISPATCH(RowsQ8_0Q8)(w.data, w.cols, r0, r1, xq, dx, xsum, n, y, ldy);
    case DType::Q4_0: return HWY_DYNAMIC_DISPATCH(RowsQ4_0Q8)(w.data, w.cols, r0, r1, xq, dx, xsum, n, y, ldy);
    case DType::Q4_1: return HWY_DYNAMIC_DISPATCH(RowsQ4_1Q8)(w.data, w.cols, r0, r1, xq, dx, xsum, n, y, ldy);
    case DType::Q5_0: return HWY_DYNAMIC_DISPATCH(RowsQ5_0Q8)(w.data, w.cols, r0, r1, xq, dx, xsum, n, y, ldy);
    case DType::Q5_1: return HWY_DYNAMIC_DISPATCH(RowsQ5_1Q8)(w.data, w.cols, r0, r1, xq, dx, xsum, n, y, ldy);
    case DType::Q4_NL: return HWY_DYNAMIC_DISPATCH(RowsQ4_NLQ8)(w.data, w.cols, r0, r1, xq, dx, xsum, n, y, ldy);
    default: break;
  }
}

// Activations of X[n, cols] rounded to int8 per 32-block, in per-thread
// buffers; tokens are split over the pool when there are many.
PackedActivations quantize_activations(const float* x, int64_t n, int64_t cols) {
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> dx, xsum;
  thread_local std::vector<int32_t> isum;
  const int64_t nb = cols / 32;
  xq.resize(size_t(n * cols));
  dx.resize(size_t(n * nb));
  isum.resize(size_t(n * nb));
  xsum.resize(size_t(n * nb));
  int8_t* q = xq.data();
  float *d = dx.data(), *s = xsum.data();
  int32_t* is = isum.data();
  auto run = [&](int64_t t0, int64_t t1) {
    HWY_DYNAMIC_DISPATCH(QuantizeActivations)(x + t0 * cols, (t1 - t0) * cols, q + t0 * cols, d + t0 * nb,
                                              is + t0 * nb, s + t0 * nb);
  };
  if (n * cols >= (int64_t(1) << 16)) {
    thread_pool().parallel_for(n, std::max<int64_t>(1, (int64_t(1) << 14) / cols), run);
  } else {
    run(0, n);
  }
  return PackedActivations{q, d, is, s, cols};
}

void matmul_small(const MatRef& w, const float* x, int64_t n, float* y) {
  ThreadPool& pool = thread_pool();
  const int64_t parts = int64_t(pool.size()) * 4;
  const int64_t chunk = std::max(min_rows_per_chunk(w), ((w.rows + parts - 1) / parts + 3) / 4 * 4);
  const int64_t nb = w.cols / 32;
  if (is_quantized(w.dtype) && g_quant_dot.load(std::memory_order_relaxed) == QuantDot::Q8Activations) {
    const PackedActivations a = quantize_activations(x, n, w.cols);
    pool.parallel_for(w.rows, chunk, [&](int64_t r0, int64_t r1) { rows_q8(w, r0, r1, a.xq, a.dx, a.xsum, n, y); });
    return;
  }
  std::vector<float> xsum;
  if (w.dtype == DType::Q4_1 || w.dtype == DType::Q5_1) {
    xsum.resize(size_t(n * nb));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t k = 0; k < nb; ++k) {
        float s = 0.0f;
        for (int64_t j = 0; j < 32; ++j) s += x[t * w.cols + k * 32 + j];
        xsum[size_t(t * nb + k)] = s;
      }
  }
  const float* xs = xsum.empty() ? nullptr : xsum.data();
  pool.parallel_for(w.rows, chunk, [&](int64_t r0, int64_t r1) { rows(w, r0, r1, x, xs, n, y); });
}

// Rows of W per SGEMM call: about 512 KiB of decoded floats, a multiple of
// 16. It depends on the shape only, never on the thread count, so that every
// output is computed by the same call shape for any number of threads.
int64_t gemm_chunk_rows(int64_t cols) {
  const int64_t r = (int64_t(1) << 17) / std::max<int64_t>(1, cols);
  return std::max<int64_t>(16, r / 16 * 16);
}

void matmul_gemm(const MatRef& w, const float* x, int64_t n, float* y) {
  const int64_t cols = w.cols;
  thread_pool().parallel_for(w.rows, gemm_chunk_rows(cols), [&](int64_t r0, int64_t r1) {
    const float* wf;
    thread_local std::vector<float> decoded;
    if (w.dtype == DType::F32) {
      wf = static_cast<const float*>(w.data) + r0 * cols;
    } else {
      decoded.resize(size_t((r1 - r0) * cols));
      decode_rows(w, r0, r1, decoded.data());
      wf = decoded.data();
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(r1 - r0), int(cols), 1.0f, x, int(cols), wf,
                int(cols), 0.0f, y + r0, int(w.rows));
  });
}

}  // namespace

void relu_square(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(ReluSquare)(x, n); }

double measure_fma_peak(double seconds) {
  ThreadPool& pool = thread_pool();
  const int64_t threads = pool.size();
  const int64_t lanes = HWY_DYNAMIC_DISPATCH(FloatLanes)();
  std::atomic<uint32_t> sink{0};
  auto run = [&](int64_t iterations) {
    const auto start = std::chrono::steady_clock::now();
    pool.parallel_for(threads, 1, [&](int64_t, int64_t) {
      const float r = HWY_DYNAMIC_DISPATCH(FmaLoop)(iterations);
      uint32_t bits;
      std::memcpy(&bits, &r, 4);
      sink += bits;
    });
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  int64_t iterations = 1 << 16;
  while (run(iterations) < seconds / 8 && iterations < (int64_t(1) << 40)) iterations *= 2;
  double best = 0;
  for (int r = 0; r < 3; ++r) best = std::max(best, double(threads * iterations * 12 * lanes * 2) / run(iterations));
  return best;
}

void set_quant_dot(QuantDot mode) { g_quant_dot = mode; }
QuantDot quant_dot() { return g_quant_dot; }

void mat_row(const MatRef& w, int64_t row, float* out) {
  check(w);
  decode_rows(w, row, row + 1, out);
}

void matvec(const MatRef& w, const float* x, float* y) { matmul(w, x, 1, y); }

void matmul(const MatRef& w, const float* x, int64_t n, float* y) {
  check(w);
  if (n <= 0 || w.rows == 0) return;
  if (w.cols == 0) {
    std::fill(y, y + n * w.rows, 0.0f);
    return;
  }
  if (w.packed != nullptr && g_quant_dot.load(std::memory_order_relaxed) == QuantDot::Q8Activations) {
    packed_matmul(w, quantize_activations(x, n, w.cols), n, y);
  } else if (n < kGemmMinRows) {
    matmul_small(w, x, n, y);
  } else {
    matmul_gemm(w, x, n, y);
  }
}

namespace reference {

void matmul(const MatRef& w, const float* x, int64_t n, float* y) {
  check(w);
  std::vector<float> row(size_t(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    convert_to_f32(w.dtype, static_cast<const char*>(w.data) + size_t(r) * w.row_bytes(), row.data(),
                   size_t(w.cols));
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) acc += double(row[size_t(c)]) * double(x[t * w.cols + c]);
      y[t * w.rows + r] = float(acc);
    }
  }
}

}  // namespace reference

void layer_norm(const float* x, const float* weight, const float* bias, int64_t n, float eps, float* y) {
  float mean = 0.0f;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= float(n);
  float var = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    var += d * d;
  }
  var /= float(n);
  const float inv = 1.0f / std::sqrt(var + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv * weight[i] + bias[i];
}

void group_norm(const float* x, const float* weight, const float* bias, int64_t groups, int64_t group_size, float eps,
                float* y) {
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t o = g * group_size;
    layer_norm(x + o, weight + o, bias + o, group_size, eps, y + o);
  }
}

}  // namespace rwkv

#endif  // HWY_ONCE
