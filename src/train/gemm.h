// Dense matrix products for the trainer, in float (training) or double
// (gradient checks), through OpenBLAS. Row-major throughout.
#pragma once

#include <cstdint>

namespace rwkv::train {

// C[M, N] = alpha * op(A) op(B) + beta * C, op = transpose when the flag is set;
// op(A) is [M, K], op(B) is [K, N]; lda/ldb/ldc are the stored row lengths.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// Torch Linear weights W [out, in]:       Y[rows, out] = X[rows, in] W^T
template <typename T>
void linear_forward(const T* x, const T* w, int64_t rows, int64_t in, int64_t out, T* y) {
  gemm<T>(false, true, rows, out, in, T(1), x, in, w, in, T(0), y, out);
}
// dW += dY^T X; dX = dY W (beta = 1 adds to dX instead).
template <typename T>
void linear_backward(const T* x, const T* w, const T* dy, int64_t rows, int64_t in, int64_t out, T* dw, T* dx,
                     T beta_dx) {
  if (dw) gemm<T>(true, false, out, in, rows, T(1), dy, out, x, in, T(1), dw, in);
  if (dx) gemm<T>(false, false, rows, in, out, T(1), dy, out, w, in, beta_dx, dx, in);
}

// RWKV-7 LoRA factors W [in, out] (used as x @ W):   Y[rows, out] = X[rows, in] W
template <typename T>
void right_forward(const T* x, const T* w, int64_t rows, int64_t in, int64_t out, T* y) {
  gemm<T>(false, false, rows, out, in, T(1), x, in, w, out, T(0), y, out);
}
// dW += X^T dY; dX = dY W^T (beta = 1 adds to dX instead).
template <typename T>
void right_backward(const T* x, const T* w, const T* dy, int64_t rows, int64_t in, int64_t out, T* dw, T* dx,
                    T beta_dx) {
  if (dw) gemm<T>(true, false, in, out, rows, T(1), x, in, dy, out, T(1), dw, out);
  if (dx) gemm<T>(false, true, rows, in, out, T(1), dy, out, w, out, beta_dx, dx, in);
}

}  // namespace rwkv::train
