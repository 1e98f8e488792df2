#include "model/wkv_diagonal.h"

#include <algorithm>
#include <vector>

namespace rwkv {
namespace {

constexpr int64_t kChunk = 16;

void step(const float* r, const float* k, const float* v, const float* w, const float* u, int64_t N, float* S,
          float* y) {
  std::fill(y, y + N, 0.0f);
  for (int64_t i = 0; i < N; ++i) {
    float* row = S + i * N;
    const float ri = r[i], ki = k[i], ui = u[i], wi = w[i];
    for (int64_t j = 0; j < N; ++j) {
      const float kv = ki * v[j];
      y[j] += ri * (ui * kv + row[j]);
      row[j] = wi * row[j] + kv;
    }
  }
}

// One chunk of L tokens. Unrolled from the state S_0 before the chunk:
//   y_t = (r_t * prod_{q<t} w_q)^T S_0 + sum_{s<=t} A[t][s] v_s
//   A[t][s] = sum_i r_t[i] k_s[i] prod_{s<q<t} w_q[i]   (s < t),   A[t][t] = sum_i r_t[i] u[i] k_t[i]
//   S_L = diag(prod_q w_q) S_0 + sum_s diag(prod_{q>s} w_q) k_s v_s^T
// The decay products are built by running multiplication, never by dividing
// cumulative products, so decays that underflow to 0 stay exact.
void chunk(const float* r, const float* k, const float* v, const float* w, int64_t w_row_stride, const float* u,
           int64_t row_stride, int64_t N, float* S, float* y, std::vector<float>& scratch) {
  const int64_t L = kChunk;
  scratch.resize(size_t(L * L + 2 * N));
  float* A = scratch.data();
  float* decay = A + L * L;    // running product of w
  float* rdecay = decay + N;   // r_t * prod_{q<t} w_q
  auto row = [row_stride](const float* base, int64_t t) { return base + t * row_stride; };
  auto wrow = [w, w_row_stride](int64_t t) { return w + t * w_row_stride; };

  for (int64_t t = 0; t < L; ++t) {
    const float* rt = row(r, t);
    float* yt = y + t * row_stride;
    float diag = 0.0f;
    for (int64_t i = 0; i < N; ++i) diag += rt[i] * u[i] * row(k, t)[i];
    A[t * L + t] = diag;
    std::fill(decay, decay + N, 1.0f);
    for (int64_t s = t - 1; s >= 0; --s) {
      const float* ks = row(k, s);
      float acc = 0.0f;
      for (int64_t i = 0; i < N; ++i) acc += rt[i] * ks[i] * decay[i];
      A[t * L + s] = acc;
      const float* ws = wrow(s);
      for (int64_t i = 0; i < N; ++i) decay[i] *= ws[i];
    }
    if (t == 0) std::fill(decay, decay + N, 1.0f);
    // y_t from the carried state, then from the chunk's own tokens.
    for (int64_t i = 0; i < N; ++i) rdecay[i] = rt[i] * decay[i];
    std::fill(yt, yt + N, 0.0f);
    for (int64_t i = 0; i < N; ++i) {
      const float a = rdecay[i];
      const float* Si = S + i * N;
      for (int64_t j = 0; j < N; ++j) yt[j] += a * Si[j];
    }
    for (int64_t s = 0; s <= t; ++s) {
      const float a = A[t * L + s];
      const float* vs = row(v, s);
      for (int64_t j = 0; j < N; ++j) yt[j] += a * vs[j];
    }
  }
  // The state after the chunk: walk s backwards, decay = prod_{q>s} w_q.
  std::fill(decay, decay + N, 1.0f);
  std::vector<float> total(static_cast<size_t>(N), 1.0f);
  for (int64_t q = 0; q < L; ++q)
    for (int64_t i = 0; i < N; ++i) total[size_t(i)] *= wrow(q)[i];
  for (int64_t i = 0; i < N; ++i) {
    float* Si = S + i * N;
    for (int64_t j = 0; j < N; ++j) Si[j] *= total[size_t(i)];
  }
  for (int64_t s = L - 1; s >= 0; --s) {
    const float *ks = row(k, s), *vs = row(v, s);
    for (int64_t i = 0; i < N; ++i) {
      const float a = ks[i] * decay[i];
      float* Si = S + i * N;
      for (int64_t j = 0; j < N; ++j) Si[j] += a * vs[j];
    }
    const float* ws = wrow(s);
    for (int64_t i = 0; i < N; ++i) decay[i] *= ws[i];
  }
}

}  // namespace

void wkv_diagonal(const float* r, const float* k, const float* v, const float* w, int64_t w_row_stride,
                  const float* u, int64_t T, int64_t row_stride, int64_t N, float* S, float* y) {
  std::vector<float> scratch;
  int64_t t = 0;
  for (; T - t >= kChunk; t += kChunk) {
    const int64_t o = t * row_stride;
    chunk(r + o, k + o, v + o, w + t * w_row_stride, w_row_stride, u, row_stride, N, S, y + o, scratch);
  }
  for (; t < T; ++t) {
    const int64_t o = t * row_stride;
    step(r + o, k + o, v + o, w + t * w_row_stride, u, N, S, y + o);
  }
}

}  // namespace rwkv
