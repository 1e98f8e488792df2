#include "core/kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace rwkv {
namespace {

template <typename Widen>
void matvec_widening(const uint16_t* w, int64_t rows, int64_t cols, const float* x, float* y, Widen widen) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* row = w + r * cols;
    float acc = 0.0f;
    for (int64_t c = 0; c < cols; ++c) acc += widen(row[c]) * x[c];
    y[r] = acc;
  }
}

}  // namespace

void mat_row(const MatRef& w, int64_t row, float* out) {
  const size_t elem = dtype_size(w.dtype);
  convert_to_f32(w.dtype, static_cast<const char*>(w.data) + size_t(row) * size_t(w.cols) * elem, out, size_t(w.cols));
}

void matvec(const MatRef& w, const float* x, float* y) {
  switch (w.dtype) {
    case DType::F32:
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(w.rows), int(w.cols), 1.0f, static_cast<const float*>(w.data),
                  int(w.cols), x, 1, 0.0f, y, 1);
      return;
    case DType::F16:
      matvec_widening(static_cast<const uint16_t*>(w.data), w.rows, w.cols, x, y, f16_to_f32);
      return;
    case DType::BF16:
      matvec_widening(static_cast<const uint16_t*>(w.data), w.rows, w.cols, x, y, bf16_to_f32);
      return;
  }
}

void matmul(const MatRef& w, const float* x, int64_t n, float* y) {
  if (n == 1) {
    matvec(w, x, y);
    return;
  }
  if (w.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(w.rows), int(w.cols), 1.0f, x, int(w.cols),
                static_cast<const float*>(w.data), int(w.cols), 0.0f, y, int(w.rows));
    return;
  }
  // Half-precision weights: widen a block of rows at a time so the scratch stays
  // cache-sized, then multiply that block of outputs with SGEMM.
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(w.rows, (1 << 18) / std::max<int64_t>(1, w.cols)));
  std::vector<float> widened(size_t(block * w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += block) {
    const int64_t nr = std::min(block, w.rows - r0);
    for (int64_t r = 0; r < nr; ++r) mat_row(w, r0 + r, widened.data() + r * w.cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(nr), int(w.cols), 1.0f, x, int(w.cols),
                widened.data(), int(w.cols), 0.0f, y + r0, int(w.rows));
  }
}

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
