// Matrix kernels used by the model code. Weights may be stored as f32, f16,
// bf16 or a block-quantized type (core/quant.h: ggml's and Q4_NL). Float
// weights are widened on the fly and multiplied in float32; quantized ones
// are multiplied with int8 dot products against activations rounded to int8
// per 32-block (QuantDot below), from a packed copy when the MatRef has one
// (core/kernels_packed.h). Shapes are stated per function; all buffers are
// contiguous row-major.
//
// Matrix products use SIMD code compiled for several instruction sets and
// chosen at run time (Highway), spread over the thread pool (core/
// thread_pool.h) by output rows. Each output is computed by one thread in a
// fixed order, so results are identical for every thread count (on a given
// instruction set; different instruction sets sum in different orders).
#pragma once

#include <cstddef>
#include <cstdint>

#include <vector>

#include "core/dtype.h"

namespace rwkv {

// A weight matrix W of shape [rows, cols] (rows = outputs, cols = inputs).
// For a quantized dtype, cols is a multiple of the block size and each row is
// cols / block_size whole blocks.
struct MatRef {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  // The same weights repacked by pack_matrix, or null. When set, matmul
  // multiplies from it (int8 activations, any batch size); data stays the
  // source for mat_row and for QuantDot::DecodeToFloat.
  const void* packed = nullptr;

  size_t row_bytes() const { return dtype_bytes(dtype, cols); }
  size_t bytes() const { return size_t(rows) * row_bytes(); }
};

// Whether pack_matrix takes this type: Q8_0, Q4_0, Q4_1 and Q4_NL. The
// other types multiply from their stored layout.
bool packable(DType t);
// Bytes of pack_matrix's result for W (0 if its type is not packable).
size_t packed_bytes(const MatRef& w);
// W's weights in the interleaved layout of the int8 kernels: groups of
// eight rows, each block's scales together, quants interleaved four bytes
// at a time (core/kernels_packed.cpp). Same size as W. Point W.packed at it.
std::vector<std::byte> pack_matrix(const MatRef& w);

// y[rows] = W[rows, cols] . x[cols]
void matvec(const MatRef& w, const float* x, float* y);

// Y[n, rows] = X[n, cols] . W^T   (each of the n rows of X through W)
void matmul(const MatRef& w, const float* x, int64_t n, float* y);

// Copies row `row` of W, decoded to float32, into out[cols].
void mat_row(const MatRef& w, int64_t row, float* out);

// y[n] = (x - mean) / sqrt(var + eps) * weight + bias, over one vector of length n.
void layer_norm(const float* x, const float* weight, const float* bias, int64_t n, float eps, float* y);

// Group norm of x[groups * group_size] with a per-channel affine transform.
void group_norm(const float* x, const float* weight, const float* bias, int64_t groups, int64_t group_size, float eps,
                float* y);

// The float32 multiply-add peak of the thread pool's threads in FLOP/s (two
// per multiply-add), measured with independent vector FMAs for about
// `seconds`: the ceiling prefill is compared with.
double measure_fma_peak(double seconds = 0.5);

// x[i] = max(x[i], 0)^2 for i < n (vectorized).
void relu_square(float* x, int64_t n);

inline float sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }

// How matvec (and matmul below kGemmMinRows) multiplies quantized weights
// with float activations: Q8Activations rounds each 32-block of x to int8
// (scale absmax / 127) and sums exact integer products, as ggml does;
// DecodeToFloat decodes the weights and multiplies in float, exactly up to
// summation order but slower (docs/benchmarks.md). Process-wide; the
// default is Q8Activations.
enum class QuantDot { Q8Activations, DecodeToFloat };
void set_quant_dot(QuantDot mode);
QuantDot quant_dot();

// Plain scalar versions of the matrix kernels, the yardstick the fast ones
// are tested against: rows decoded with convert_to_f32, sums in double.
namespace reference {
void matmul(const MatRef& w, const float* x, int64_t n, float* y);
}  // namespace reference

// For weights without a packed copy: below this many input rows matmul runs
// the matvec kernels (weights stay in cache between the rows of X); from it
// on, blocks of W are decoded and multiplied with SGEMM. Packed weights use
// their int8 kernel for every number of rows. 16 so that batched decoding (B
// sequences, one token each) of unpacked types reads the weights once per
// step instead of decoding them to floats. Exposed for tests and benchmarks.
inline constexpr int64_t kGemmMinRows = 16;

}  // namespace rwkv
