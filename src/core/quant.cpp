#include "core/quant.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace rwkv {
namespace {

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// ggml converts with (int8_t)(v) or (uint8_t)(v), truncating toward zero;
// the values are in range by construction except for rounding slop, which the
// clamps (ggml's MIN) absorb.
int trunc_int(float v) { return int(v); }

// The element of largest magnitude, keeping its sign (the first one on ties).
float signed_absmax(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, float& min, float& max) {
  min = FLT_MAX;
  max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
}

void quantize_q8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
}

// The 4-bit types store q[j] and q[j + 16] in one byte; `qh` collects bit 4.
void pack_nibbles(const int* q, uint8_t* qs, uint32_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = uint8_t((q[j] & 15) | ((q[j + 16] & 15) << 4));
    h |= uint32_t((q[j] >> 4) & 1) << j;
    h |= uint32_t((q[j + 16] >> 4) & 1) << (j + 16);
  }
  if (qh != nullptr) *qh = h;
}

// Q4_0 and Q5_0: d = (signed absmax) / -half, q = clamp(trunc(x / d + half + 0.5)).
void quantize_symmetric(const float* x, uint8_t* b, int bits) {
  const float half = float(1 << (bits - 1));
  const int qmax = (1 << bits) - 1;
  const float d = signed_absmax(x) / -half;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  const float offset = half + 0.5f;  // one addition after the product, as ggml rounds
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = std::min(qmax, trunc_int(x[j] * id + offset));
  if (bits == 4) {
    pack_nibbles(q, b + 2, nullptr);
  } else {
    uint32_t qh;
    pack_nibbles(q, b + 6, &qh);
    std::memcpy(b + 2, &qh, 4);
  }
}

// Q4_1 and Q5_1: d = (max - min) / qmax, m = min, q = trunc((x - min) / d + 0.5).
void quantize_affine(const float* x, uint8_t* b, int bits) {
  const int qmax = (1 << bits) - 1;
  float min, max;
  min_max(x, min, max);
  const float d = (max - min) / float(qmax);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  put_f16(b + 2, min);
  int q[32];
  // ggml clamps the 4-bit values but not the 5-bit ones (which cannot exceed
  // 31 by more than rounding); clamping both is the same on every input.
  for (int j = 0; j < 32; ++j) q[j] = std::clamp(trunc_int((x[j] - min) * id + 0.5f), 0, qmax);
  if (bits == 4) {
    pack_nibbles(q, b + 4, nullptr);
  } else {
    uint32_t qh;
    pack_nibbles(q, b + 8, &qh);
    std::memcpy(b + 4, &qh, 4);
  }
}

// Q4_NL: the index of the level nearest to t (in level units): how many of
// the midpoints between neighbouring levels t exceeds.
struct NlMidpoints {
  float mid[15];
  constexpr NlMidpoints() : mid{} {
    for (int k = 0; k < 15; ++k) mid[k] = 0.5f * float(kQ4NlLevels[k] + kQ4NlLevels[k + 1]);
  }
};
constexpr NlMidpoints kNlMid;

int nearest_level(float t) {
  int i = 0;
  for (int k = 0; k < 15; ++k) i += t > kNlMid.mid[k] ? 1 : 0;
  return i;
}

// Squared error of the block x with scale d (as stored: f16) and each weight
// at its nearest level; fills q.
float nl_assign(const float* x, float d, int* q) {
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  float err = 0.0f;
  for (int j = 0; j < 32; ++j) {
    q[j] = nearest_level(x[j] * id);
    const float e = x[j] - d * float(kQ4NlLevels[q[j]]);
    err += e * e;
  }
  return err;
}

// Candidate scales put the block's largest weight at c times the outermost
// level on either side (c from 0.80 to 1.10): a little inside, so that the
// outermost level can serve the tail rather than one weight, or a little
// beyond. Each candidate's assignment then gets the least-squares scale
// sum(x L) / sum(L L), rounded to f16, and is re-assigned; the scale with
// the smallest squared error wins (ties: the first).
void quantize_q4_nl(const float* x, uint8_t* b) {
  const float mx = signed_absmax(x);
  int q[32], best_q[32];
  float best_d = 0.0f, best_err = FLT_MAX;
  if (mx == 0.0f) {
    std::fill(best_q, best_q + 32, 8);  // level 0
  } else {
    constexpr int kCandidates = 11;
    for (float outer : {float(kQ4NlLevels[0]), float(kQ4NlLevels[15])}) {
      for (int c = 0; c < kCandidates; ++c) {
        const float d0 = mx / (outer * (0.80f + 0.03f * float(c)));
        nl_assign(x, d0, q);
        float sxl = 0.0f, sll = 0.0f;
        for (int j = 0; j < 32; ++j) {
          const float l = float(kQ4NlLevels[q[j]]);
          sxl += x[j] * l;
          sll += l * l;
        }
        const float d = sll > 0.0f ? f16_to_f32(f32_to_f16(sxl / sll)) : 0.0f;
        const float err = nl_assign(x, d, q);
        if (err < best_err) {
          best_err = err;
          best_d = d;
          std::copy(q, q + 32, best_q);
        }
      }
    }
  }
  put_f16(b, best_d);
  pack_nibbles(best_q, b + 2, nullptr);
}

// Decodes the 32 quantized integers of a 4- or 5-bit block.
void unpack(const uint8_t* qs, const uint8_t* qh_bytes, int* q) {
  uint32_t qh = 0;
  if (qh_bytes != nullptr) std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = (qs[j] & 15) | int(((qh >> j) & 1) << 4);
    q[j + 16] = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
  }
}

void dequantize_block(DType t, const uint8_t* b, float* out) {
  int q[32];
  switch (t) {
    case DType::Q8_0: {
      const float d = get_f16(b);
      for (int j = 0; j < 32; ++j) out[j] = d * float(int8_t(b[2 + j]));
      return;
    }
    case DType::Q4_0: {
      const float d = get_f16(b);
      unpack(b + 2, nullptr, q);
      for (int j = 0; j < 32; ++j) out[j] = d * float(q[j] - 8);
      return;
    }
    case DType::Q4_1: {
      const float d = get_f16(b), m = get_f16(b + 2);
      unpack(b + 4, nullptr, q);
      for (int j = 0; j < 32; ++j) out[j] = d * float(q[j]) + m;
      return;
    }
    case DType::Q5_0: {
      const float d = get_f16(b);
      unpack(b + 6, b + 2, q);
      for (int j = 0; j < 32; ++j) out[j] = d * float(q[j] - 16);
      return;
    }
    case DType::Q5_1: {
      const float d = get_f16(b), m = get_f16(b + 2);
      unpack(b + 8, b + 4, q);
      for (int j = 0; j < 32; ++j) out[j] = d * float(q[j]) + m;
      return;
    }
    case DType::Q4_NL: {
      const float d = get_f16(b);
      unpack(b + 2, nullptr, q);
      for (int j = 0; j < 32; ++j) out[j] = d * float(kQ4NlLevels[q[j]]);
      return;
    }
    default:
      break;
  }
  fail("dequantize: {} is not a quantized type", dtype_name(t));
}

void check_row(DType t, int64_t n, const char* what) {
  if (!is_quantized(t)) fail("{}: {} is not a quantized type", what, dtype_name(t));
  if (n % kQuantBlock != 0) fail("{}: {} elements is not a multiple of the block size {}", what, n, kQuantBlock);
}

}  // namespace

void quantize_row(DType t, const float* x, void* out, int64_t n) {
  check_row(t, n, "quantize");
  auto* b = static_cast<uint8_t*>(out);
  const int64_t bytes = dtype_traits(t).block_bytes;
  for (int64_t i = 0; i < n; i += kQuantBlock, b += bytes) {
    switch (t) {
      case DType::Q8_0: quantize_q8_0(x + i, b); break;
      case DType::Q4_0: quantize_symmetric(x + i, b, 4); break;
      case DType::Q5_0: quantize_symmetric(x + i, b, 5); break;
      case DType::Q4_1: quantize_affine(x + i, b, 4); break;
      case DType::Q5_1: quantize_affine(x + i, b, 5); break;
      case DType::Q4_NL: quantize_q4_nl(x + i, b); break;
      default: break;
    }
  }
}

void dequantize_row(DType t, const void* in, float* out, int64_t n) {
  check_row(t, n, "dequantize");
  const auto* b = static_cast<const uint8_t*>(in);
  const int64_t bytes = dtype_traits(t).block_bytes;
  for (int64_t i = 0; i < n; i += kQuantBlock, b += bytes) dequantize_block(t, b, out + i);
}

}  // namespace rwkv
