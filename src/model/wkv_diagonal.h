// The state recurrence shared by RWKV-5 and RWKV-6 (per head, diagonal decay,
// "bonus" u for the current token), with S[i][j] (i: key, j: value):
//   y_t[j] = sum_i r_t[i] (u[i] k_t[i] v_t[j] + S[i][j])
//   S[i][j] = w_t[i] S[i][j] + k_t[i] v_t[j]
#pragma once

#include <cstdint>

namespace rwkv {

// Runs T tokens of one head. r, k, v, w point at the head's first channel in
// row 0 of [T, row_stride] buffers; w_row_stride is row_stride for per-token
// decay (RWKV-6) or 0 for a decay fixed per channel (RWKV-5). Writes y (same
// layout) and advances S [N, N]. Whole chunks of 16 tokens use the chunked
// form (intra-chunk attention matrix and one [16, N] x [N, N] product with
// the carried state), the remainder token by token.
void wkv_diagonal(const float* r, const float* k, const float* v, const float* w, int64_t w_row_stride,
                  const float* u, int64_t T, int64_t row_stride, int64_t N, float* S, float* y);

}  // namespace rwkv
