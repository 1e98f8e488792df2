// Reference float32 kernels used by the model code. Weights may be stored as
// f32, f16 or bf16 and are widened on the fly; arithmetic is float32.
// Shapes are stated per function; all buffers are contiguous row-major.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace rwkv {

// A weight matrix W of shape [rows, cols] (rows = outputs, cols = inputs).
struct MatRef {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
};

// y[rows] = W[rows, cols] . x[cols]
void matvec(const MatRef& w, const float* x, float* y);

// Y[n, rows] = X[n, cols] . W^T   (each of the n rows of X through W)
void matmul(const MatRef& w, const float* x, int64_t n, float* y);

// Copies row `row` of W, widened, into out[cols].
void mat_row(const MatRef& w, int64_t row, float* out);

// y[n] = (x - mean) / sqrt(var + eps) * weight + bias, over one vector of length n.
void layer_norm(const float* x, const float* weight, const float* bias, int64_t n, float eps, float* y);

// Group norm of x[groups * group_size] with a per-channel affine transform.
void group_norm(const float* x, const float* weight, const float* bias, int64_t groups, int64_t group_size, float eps,
                float* y);

inline float sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }

}  // namespace rwkv
