#include "model/rwkv7.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/kernels.h"
#include "core/thread_pool.h"

namespace rwkv {
namespace {

constexpr float kLayerNormEps = 1e-5f;
constexpr float kGroupNormEps = 64e-5f;  // the official ln_x epsilon
constexpr float kNormalizeEps = 1e-12f;  // F.normalize's default
// exp(-0.5): the decay is exp(-exp(-0.5) * sigmoid(z)), i.e. the official
// exp(-exp(w)) with w = -softplus(-z) - 0.5, in (exp(-exp(-0.5)), 1).
const float kDecayScale = std::exp(-0.5f);

struct Layer {
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  // time mix
  const float *x_r, *x_w, *x_k, *x_v, *x_a, *x_g;
  const float *w0, *a0, *v0;  // v0 is null in layer 0
  MatRef w1, w2, a1, a2, v1, v2, g1, g2;  // LoRAs as [out, in]
  const float *k_k, *k_a, *r_k;
  MatRef receptance, key, value, output;
  const float *ln_x_w, *ln_x_b;
  // channel mix
  const float* ffn_x_k;
  MatRef ffn_key, ffn_value;
  // DeepEmbed only (else empty): per-token tables [V, D*D] and [D*D, C],
  // s1 as [D, C], s2 as [F, D], s0 [F].
  MatRef s_emb, s_emb_x, s1, s2;
  const float* s0 = nullptr;
};

// One sequence's rows within a call: rows [row0, row0 + rows) of every
// [tokens, C] buffer belong to it, and `state` is its whole recurrent state.
struct Segment {
  int64_t row0 = 0;
  int64_t rows = 0;
  float* state = nullptr;
};

// Tokens per chunk of the chunked recurrence (see wkv_chunk).
constexpr int64_t kChunk = 16;

struct ChunkScratch {
  std::vector<float> a, r, b, k, v, u, decay;
  void reserve(int64_t n) {
    if (int64_t(decay.size()) == n) return;
    for (auto* x : {&a, &r, &b, &k, &v, &u}) x->assign(size_t(kChunk * n), 0.0f);
    decay.assign(size_t(n), 0.0f);
  }
};

// Per-call scratch, grown to the largest chunk seen.
struct Rwkv7Workspace : Workspace {
  int64_t capacity = 0;
  std::vector<float> x, xn, mix, r, w, k, v, a, g, kk, v_first, y, lora, lora2, ffn, head_out;
  // DeepEmbed: the rows' tokens, their ln0(emb) [T, C], per-token matrices
  // [T, D*D], (x s1) and then (x s1) M [T, D], the gate [T, F].
  std::vector<int32_t> tokens;
  std::vector<float> x0, deep_m, deep_s, deep_sm, deep_gate, deep_row;

  void reserve(int64_t t, const ModelConfig& c) {
    if (t <= capacity) return;
    capacity = t;
    const size_t tc = size_t(t * c.n_embd);
    for (auto* b : {&x, &xn, &r, &w, &k, &v, &a, &g, &kk, &v_first, &y}) b->assign(tc, 0.0f);
    mix.assign(6 * tc, 0.0f);
    const int64_t rank = std::max({c.lora_w, c.lora_a, c.lora_v, c.lora_g});
    lora.assign(size_t(t * rank), 0.0f);
    lora2.assign(size_t(t * rank), 0.0f);
    ffn.assign(size_t(t * c.dim_ffn), 0.0f);
    if (c.deep_embed > 0) {
      const int64_t D = c.deep_embed;
      tokens.assign(size_t(t), 0);
      x0.assign(tc, 0.0f);
      deep_m.assign(size_t(t * D * D), 0.0f);
      deep_s.assign(size_t(t * D), 0.0f);
      deep_sm.assign(size_t(t * D), 0.0f);
      deep_gate.assign(size_t(t * c.dim_ffn), 0.0f);
      deep_row.assign(size_t(D * D), 0.0f);
    }
  }
};

class Rwkv7 final : public Model {
 public:
  Rwkv7(ModelConfig config, WeightStorage storage, MatRef emb, const float* ln0_w, const float* ln0_b,
        std::vector<Layer> layers, const float* ln_out_w, const float* ln_out_b, MatRef head)
      : Model(std::move(config)),
        storage_(std::move(storage)),
        emb_(emb),
        ln0_w_(ln0_w),
        ln0_b_(ln0_b),
        layers_(std::move(layers)),
        ln_out_w_(ln_out_w),
        ln_out_b_(ln_out_b),
        head_(head) {}

  // Per layer: time-mix shift [C], wkv state [H, N, N] (value index, key index), channel-mix shift [C].
  size_t state_size() const override { return size_t(config_.n_layer) * layer_state_size(); }
  std::unique_ptr<Workspace> new_workspace() const override { return std::make_unique<Rwkv7Workspace>(); }

 protected:
  void forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                    Workspace& workspace) const override;
  void forward_batch_impl(std::span<const BatchItem> items, Workspace& workspace) const override;

 private:
  size_t layer_state_size() const {
    return size_t(2 * config_.n_embd + config_.n_head * config_.head_size * config_.head_size);
  }
  // Runs all layers over the segments' tokens (already embedded in ws.x).
  void run_layers(std::span<const Segment> segments, int64_t T, Rwkv7Workspace& ws) const;
  void time_mix(const Layer& L, int64_t layer, std::span<const Segment> segments, int64_t T,
                size_t state_offset, Rwkv7Workspace& ws) const;
  void channel_mix(const Layer& L, std::span<const Segment> segments, int64_t T, size_t state_offset,
                   Rwkv7Workspace& ws) const;
  void deep_embed_gate(const Layer& L, int64_t T, Rwkv7Workspace& ws) const;

  WeightStorage storage_;
  MatRef emb_;
  const float *ln0_w_, *ln0_b_;
  std::vector<Layer> layers_;
  const float *ln_out_w_, *ln_out_b_;
  MatRef head_;
};

// Token shift: row t of `mixed` = x[t] + (x[t-1] - x[t]) * mu, with x[-1] = prev.
void token_shift_mix(const float* x, const float* prev, const float* mu, int64_t T, int64_t C, float* mixed) {
  for (int64_t t = 0; t < T; ++t) {
    const float* cur = x + t * C;
    const float* before = t == 0 ? prev : x + (t - 1) * C;
    float* out = mixed + t * C;
    for (int64_t c = 0; c < C; ++c) out[c] = cur[c] + (before[c] - cur[c]) * mu[c];
  }
}

// Per-token recurrence inputs, [tokens, C] each; head h of token t is at t * C + h * N.
struct WkvInputs {
  const float *r, *w, *k, *v, *kk, *a;
  int64_t C, N;
};

// x . z over n floats with kLanes independent partial sums, which the
// compiler turns into vector registers: a single running sum would make
// every add wait for the previous one (the recurrence's dot products are
// short and many, so that latency, not arithmetic, would bound them).
constexpr int64_t kLanes = 16;
inline float dot_lanes(const float* x, const float* z, int64_t n) {
  float part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += x[j + l] * z[j + l];
  float acc = 0.0f;
  for (; j < n; ++j) acc += x[j] * z[j];
  for (int64_t l = 0; l < kLanes; ++l) acc += part[l];
  return acc;
}

// The recurrence is plain C++ that the compiler vectorizes; on x86 it is
// compiled for AVX-512 and AVX2 as well as the baseline and the loader picks
// the clone the CPU runs (its dot products go from 4-wide SSE without FMA to
// 16-wide FMA). The matrix kernels proper are in core/kernels.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RWKV_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RWKV_VECTOR_CLONES
#endif

// One token, one head: the RNN step.
RWKV_VECTOR_CLONES void wkv_step(const WkvInputs& in, int64_t t, int64_t h, float* S, float* y) {
  const int64_t N = in.N, o = t * in.C + h * N;
  const float *rt = in.r + o, *wt = in.w + o, *kt = in.k + o, *vt = in.v + o, *kkt = in.kk + o, *at = in.a + o;
  for (int64_t i = 0; i < N; ++i) {
    float* row = S + i * N;
    const float sa = -dot_lanes(row, kkt, N);
    for (int64_t j = 0; j < N; ++j) row[j] = row[j] * wt[j] + sa * (kkt[j] * at[j]) + vt[i] * kt[j];
    y[o + i] = dot_lanes(row, rt, N);
  }
}

// kChunk tokens starting at t0, one head, in chunked form. With D_t the
// cumulative decay (prod of w up to t), alpha = -kk, beta = kk * a, and
// u_s = S_{s-1} alpha_s, unrolling the recurrence gives
//   S_t = S_0 D_t + sum_{s<=t} (u_s beta_s^T + v_s k_s^T) D_t / D_s
//   u_s = S_0 (D_{s-1} alpha_s) + sum_{j<s} [(alpha_s D_{s-1})·(beta_j / D_j)] u_j
//                               + sum_{j<s} [(alpha_s D_{s-1})·(k_j / D_j)] v_j
//   y_t = S_0 (D_t r_t) + sum_{s<=t} [(r_t D_t)·(beta_s / D_s)] u_s + [(r_t D_t)·(k_s / D_s)] v_s
// so a chunk is a few [kChunk x N] products and one triangular solve for u.
// 1/D_s stays below (1/0.545)^16 ~ 1.6e4 for a 16-token chunk (w > exp(-exp(-0.5))),
// so the factored products lose nothing in float32.
RWKV_VECTOR_CLONES void wkv_chunk(const WkvInputs& in, int64_t t0, int64_t h, float* S, float* y, ChunkScratch& c) {
  const int64_t N = in.N, L = kChunk;
  c.reserve(N);
  float *A = c.a.data(), *R = c.r.data(), *B = c.b.data(), *K = c.k.data(), *V = c.v.data(), *U = c.u.data();
  float* decay = c.decay.data();  // D_{t} of the current row, per key channel
  for (int64_t j = 0; j < N; ++j) decay[j] = 1.0f;
  for (int64_t s = 0; s < L; ++s) {
    const int64_t o = (t0 + s) * in.C + h * N;
    for (int64_t j = 0; j < N; ++j) {
      const float kk = in.kk[o + j];
      A[s * N + j] = -kk * decay[j];  // alpha_s D_{s-1}
      decay[j] *= in.w[o + j];
      const float inv = 1.0f / decay[j];
      R[s * N + j] = in.r[o + j] * decay[j];
      B[s * N + j] = kk * in.a[o + j] * inv;
      K[s * N + j] = in.k[o + j] * inv;
      V[s * N + j] = in.v[o + j];
    }
  }
  auto dot = [N](const float* x, const float* z) { return dot_lanes(x, z, N); };
  // u_s, in order (forward substitution of the strictly lower triangular system).
  for (int64_t s = 0; s < L; ++s) {
    float* u = U + s * N;
    for (int64_t i = 0; i < N; ++i) u[i] = dot(S + i * N, A + s * N);
    for (int64_t j = 0; j < s; ++j) {
      const float ab = dot(A + s * N, B + j * N), ak = dot(A + s * N, K + j * N);
      for (int64_t i = 0; i < N; ++i) u[i] += ab * U[j * N + i] + ak * V[j * N + i];
    }
  }
  for (int64_t t = 0; t < L; ++t) {
    float* yt = y + (t0 + t) * in.C + h * N;
    for (int64_t i = 0; i < N; ++i) yt[i] = dot(S + i * N, R + t * N);
    for (int64_t s = 0; s <= t; ++s) {
      const float rb = dot(R + t * N, B + s * N), rk = dot(R + t * N, K + s * N);
      for (int64_t i = 0; i < N; ++i) yt[i] += rb * U[s * N + i] + rk * V[s * N + i];
    }
  }
  // S_L = (S_0 + sum_s u_s (beta_s/D_s)^T + v_s (k_s/D_s)^T) D_L
  for (int64_t i = 0; i < N; ++i) {
    float* row = S + i * N;
    for (int64_t s = 0; s < L; ++s) {
      const float us = U[s * N + i], vs = V[s * N + i];
      const float *bs = B + s * N, *ks = K + s * N;
      for (int64_t j = 0; j < N; ++j) row[j] += us * bs[j] + vs * ks[j];
    }
    for (int64_t j = 0; j < N; ++j) row[j] *= decay[j];
  }
}

void Rwkv7::time_mix(const Layer& L, int64_t layer, std::span<const Segment> segments, int64_t T,
                     size_t state_offset, Rwkv7Workspace& ws) const {
  const int64_t C = config_.n_embd, H = config_.n_head, N = config_.head_size;
  const float* xn = ws.xn.data();
  float* mix = ws.mix.data();
  const size_t tc = size_t(T * C);
  float *xr = mix, *xw = mix + tc, *xk = mix + 2 * tc, *xv = mix + 3 * tc, *xa = mix + 4 * tc, *xg = mix + 5 * tc;
  for (const Segment& seg : segments) {
    float* shift = seg.state + state_offset;
    const int64_t o = seg.row0 * C;
    parallel_items(seg.rows, 6 * C, [&](int64_t b, int64_t e) {
      const float* prev = b == 0 ? shift : xn + o + (b - 1) * C;
      const int64_t ob = o + b * C;
      const std::pair<const float*, float*> mixes[] = {{L.x_r, xr}, {L.x_w, xw}, {L.x_k, xk},
                                                       {L.x_v, xv}, {L.x_a, xa}, {L.x_g, xg}};
      for (const auto& [mu, out] : mixes) token_shift_mix(xn + ob, prev, mu, e - b, C, out + ob);
    });
    std::memcpy(shift, xn + o + (seg.rows - 1) * C, size_t(C) * sizeof(float));
  }

  float *r = ws.r.data(), *w = ws.w.data(), *k = ws.k.data(), *v = ws.v.data(), *a = ws.a.data(), *g = ws.g.data();
  float* lora = ws.lora.data();
  matmul(L.receptance, xr, T, r);
  matmul(L.key, xk, T, k);
  matmul(L.value, xv, T, v);

  // Element-wise steps run on the pool over tokens (parallel_items), the
  // recurrence over heads: every token and head is computed the same way
  // wherever it runs, so results do not depend on the thread count.
  // decay: w = exp(-e^-0.5 * sigmoid(w0 + tanh(xw W1) W2))
  matmul(L.w1, xw, T, lora);
  const int64_t rw = L.w1.rows;
  parallel_items(T, rw, [&](int64_t b, int64_t e) {
    for (int64_t i = b * rw; i < e * rw; ++i) lora[i] = std::tanh(lora[i]);
  });
  matmul(L.w2, lora, T, w);
  // in-context learning rate: a = sigmoid(a0 + (xa A1) A2); after the decay
  // lora buffer is consumed
  float* lora_a = ws.lora2.data();
  matmul(L.a1, xa, T, lora_a);
  matmul(L.a2, lora_a, T, a);
  parallel_items(T, 2 * C, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int64_t c = 0; c < C; ++c) {
        w[t * C + c] = std::exp(-kDecayScale * sigmoid(L.w0[c] + w[t * C + c]));
        a[t * C + c] = sigmoid(L.a0[c] + a[t * C + c]);
      }
  });

  // value residual: layer 0 publishes its v, later layers mix towards it.
  if (layer == 0) {
    std::memcpy(ws.v_first.data(), v, tc * sizeof(float));
  } else {
    float* mixv = ws.y.data();  // y is free until the recurrence
    matmul(L.v1, xv, T, lora);
    matmul(L.v2, lora, T, mixv);
    const float* vf = ws.v_first.data();
    parallel_items(T, C, [&](int64_t b, int64_t e) {
      for (int64_t i = b * C; i < e * C; ++i) v[i] += (vf[i] - v[i]) * sigmoid(L.v0[i % C] + mixv[i]);
    });
  }

  // gate: g = sigmoid(xg G1) G2
  matmul(L.g1, xg, T, lora);
  const int64_t rg = L.g1.rows;
  parallel_items(T, rg, [&](int64_t b, int64_t e) {
    for (int64_t i = b * rg; i < e * rg; ++i) lora[i] = sigmoid(lora[i]);
  });
  matmul(L.g2, lora, T, g);

  // kk = L2-normalised (k * k_k) per head; then k = k * (1 + (a - 1) * k_a)
  float* kk = ws.kk.data();
  parallel_items(T, 2 * C, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t o = t * C + h * N;
        float sq = 0.0f;
        for (int64_t j = 0; j < N; ++j) {
          kk[o + j] = k[o + j] * L.k_k[h * N + j];
          sq += kk[o + j] * kk[o + j];
        }
        const float inv = 1.0f / std::max(std::sqrt(sq), kNormalizeEps);
        for (int64_t j = 0; j < N; ++j) kk[o + j] *= inv;
      }
      for (int64_t c = 0; c < C; ++c) k[t * C + c] *= 1.0f + (a[t * C + c] - 1.0f) * L.k_a[c];
    }
  });

  // The recurrence on each head's S[i][j] (i: value, j: key):
  //   S = S * diag(w) + (S (-kk)) (kk * a)^T + v k^T,   y = S r
  // Whole chunks of kChunk tokens go through the chunked form (small matrix
  // products); the rest of a segment, and RNN steps, token by token. Heads
  // (of every segment) are independent and go to the pool.
  float* y = ws.y.data();
  const WkvInputs in{r, w, k, v, kk, a, C, N};
  const int64_t jobs = int64_t(segments.size()) * H;
  parallel_items(jobs, (T / int64_t(segments.size()) + 1) * N * N / 8, [&](int64_t j0, int64_t j1) {
    thread_local ChunkScratch scratch;
    for (int64_t j = j0; j < j1; ++j) {
      const Segment& seg = segments[size_t(j / H)];
      const int64_t h = j % H;
      float* S = seg.state + state_offset + C + h * N * N;
      int64_t t = seg.row0;
      const int64_t end = seg.row0 + seg.rows;
      for (; end - t >= kChunk; t += kChunk) wkv_chunk(in, t, h, S, y, scratch);
      for (; t < end; ++t) wkv_step(in, t, h, S, y);
    }
  });

  // ln_x group norm per head, the r·k bonus, the gate, the output projection.
  parallel_items(T, 3 * C, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* yt = y + t * C;
      group_norm(yt, L.ln_x_w, L.ln_x_b, H, N, kGroupNormEps, yt);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t o = t * C + h * N;
        float bonus = 0.0f;
        for (int64_t j = 0; j < N; ++j) bonus += r[o + j] * k[o + j] * L.r_k[h * N + j];
        for (int64_t i = 0; i < N; ++i) y[o + i] += bonus * v[o + i];
      }
      for (int64_t c = 0; c < C; ++c) yt[c] *= g[t * C + c];
    }
  });
  float* out = ws.r.data();  // r is no longer needed
  matmul(L.output, y, T, out);
  float* x = ws.x.data();
  for (int64_t i = 0; i < T * C; ++i) x[i] += out[i];
}

void Rwkv7::channel_mix(const Layer& L, std::span<const Segment> segments, int64_t T, size_t state_offset,
                        Rwkv7Workspace& ws) const {
  const int64_t C = config_.n_embd;
  float* xk = ws.mix.data();
  for (const Segment& seg : segments) {
    float* shift = seg.state + state_offset;
    const int64_t o = seg.row0 * C;
    token_shift_mix(ws.xn.data() + o, shift, L.ffn_x_k, seg.rows, C, xk + o);
    std::memcpy(shift, ws.xn.data() + o + (seg.rows - 1) * C, size_t(C) * sizeof(float));
  }
  float* hidden = ws.ffn.data();
  matmul(L.ffn_key, xk, T, hidden);
  const int64_t F = config_.dim_ffn;
  parallel_items(T, F, [&](int64_t b, int64_t e) { relu_square(hidden + b * F, (e - b) * F); });
  if (config_.deep_embed > 0) deep_embed_gate(L, T, ws);
  float* out = ws.r.data();
  matmul(L.ffn_value, hidden, T, out);
  float* x = ws.x.data();
  parallel_items(T, C, [&](int64_t b, int64_t e) {
    for (int64_t i = b * C; i < e * C; ++i) x[i] += out[i];
  });
}

// DeepEmbed: hidden *= ((x s1) M) s2 + s0 per row, with x the ln2 output
// (ws.xn, not token-shifted) and M = s_emb[token] + s_emb_x . ln0(emb[token])
// as a row-major [D, D] matrix.
void Rwkv7::deep_embed_gate(const Layer& L, int64_t T, Rwkv7Workspace& ws) const {
  const int64_t D = config_.deep_embed, DD = D * D, F = config_.dim_ffn;
  float* m = ws.deep_m.data();
  matmul(L.s_emb_x, ws.x0.data(), T, m);
  float* row = ws.deep_row.data();
  for (int64_t t = 0; t < T; ++t) {
    mat_row(L.s_emb, ws.tokens[size_t(t)], row);
    float* mt = m + t * DD;
    for (int64_t i = 0; i < DD; ++i) mt[i] += row[i];
  }
  float* s = ws.deep_s.data();
  matmul(L.s1, ws.xn.data(), T, s);
  float* sm = ws.deep_sm.data();
  for (int64_t t = 0; t < T; ++t) {
    const float* st = s + t * D;
    const float* mt = m + t * DD;
    float* out = sm + t * D;
    for (int64_t j = 0; j < D; ++j) out[j] = 0.0f;
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = 0; j < D; ++j) out[j] += st[i] * mt[i * D + j];
  }
  float* gate = ws.deep_gate.data();
  matmul(L.s2, sm, T, gate);
  float* hidden = ws.ffn.data();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t f = 0; f < F; ++f) hidden[t * F + f] *= gate[t * F + f] + L.s0[f];
}

void Rwkv7::run_layers(std::span<const Segment> segments, int64_t T, Rwkv7Workspace& ws) const {
  const int64_t C = config_.n_embd;
  float* x = ws.x.data();
  const size_t per_layer = layer_state_size();
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const Layer& L = layers_[size_t(l)];
    const size_t offset = size_t(l) * per_layer;
    auto norm = [&](const float* weight, const float* bias) {
      parallel_items(T, C, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) layer_norm(x + t * C, weight, bias, C, kLayerNormEps, ws.xn.data() + t * C);
      });
    };
    norm(L.ln1_w, L.ln1_b);
    time_mix(L, l, segments, T, offset, ws);
    norm(L.ln2_w, L.ln2_b);
    channel_mix(L, segments, T, offset + per_layer - size_t(C), ws);
  }
}

void Rwkv7::forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                         Workspace& workspace) const {
  const BatchItem item{tokens, &state, which,
                       std::span<float>(logits, which == Logits::None ? 0
                                                : which == Logits::Last
                                                    ? size_t(config_.n_vocab)
                                                    : tokens.size() * size_t(config_.n_vocab))};
  forward_batch_impl(std::span<const BatchItem>(&item, 1), workspace);
}

void Rwkv7::forward_batch_impl(std::span<const BatchItem> items, Workspace& workspace) const {
  auto& ws = static_cast<Rwkv7Workspace&>(workspace);
  const int64_t C = config_.n_embd, V = config_.n_vocab;
  std::vector<Segment> segments;
  int64_t T = 0;
  for (const BatchItem& item : items) {
    segments.push_back(Segment{T, int64_t(item.tokens.size()), item.state->data().data()});
    T += int64_t(item.tokens.size());
  }
  ws.reserve(T, config_);
  float* x = ws.x.data();
  for (size_t i = 0; i < items.size(); ++i) {
    for (int64_t t = 0; t < segments[i].rows; ++t) {
      float* row = x + (segments[i].row0 + t) * C;
      mat_row(emb_, items[i].tokens[size_t(t)], row);
      layer_norm(row, ln0_w_, ln0_b_, C, kLayerNormEps, row);
    }
  }
  if (config_.deep_embed > 0) {  // the gates read each row's token and ln0(emb)
    std::memcpy(ws.x0.data(), x, size_t(T * C) * sizeof(float));
    for (size_t i = 0; i < items.size(); ++i)
      std::copy(items[i].tokens.begin(), items[i].tokens.end(), ws.tokens.begin() + segments[i].row0);
  }
  run_layers(segments, T, ws);

  // The head only for the rows whose logits are wanted, gathered contiguously.
  int64_t rows = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const int64_t first = items[i].which == Logits::All ? 0 : segments[i].rows - 1;
    if (items[i].which == Logits::None) continue;
    for (int64_t t = first; t < segments[i].rows; ++t, ++rows)
      layer_norm(x + (segments[i].row0 + t) * C, ln_out_w_, ln_out_b_, C, kLayerNormEps, ws.xn.data() + rows * C);
  }
  if (rows == 0) return;
  if (ws.head_out.size() < size_t(rows * V)) ws.head_out.resize(size_t(rows * V));
  matmul(head_, ws.xn.data(), rows, ws.head_out.data());
  int64_t row = 0;
  for (const BatchItem& item : items) {
    if (item.which == Logits::None) continue;
    const int64_t n = item.which == Logits::All ? int64_t(item.tokens.size()) : 1;
    std::memcpy(item.logits.data(), ws.head_out.data() + row * V, size_t(n * V) * sizeof(float));
    row += n;
  }
}

}  // namespace

std::unique_ptr<Model> load_rwkv7(std::shared_ptr<const TensorArchive> archive, V7Variant variant) {
  ModelConfig cfg;
  cfg.arch = Arch::V7;
  cfg.variant = variant == V7Variant::DeepEmbed ? "x070a (DeepEmbed)" : "x070";
  cfg.file_format = archive->format;
  // rwkv.cpp's converter stores the six token-shift mixes concatenated and
  // the LoRA matrices already transposed to [out, in].
  const bool rwkvcpp = archive->format == "rwkv.cpp";

  WeightStorage storage;
  WeightReader in(archive, storage);
  const TensorInfo& emb = in.get("emb.weight");
  if (emb.shape.size() != 2 || emb.shape[0] <= 0 || emb.shape[1] <= 0)
    fail("{}: tensor 'emb.weight' must be [n_vocab, n_embd]", archive->path);
  cfg.n_vocab = emb.shape[0];
  cfg.n_embd = emb.shape[1];
  const int64_t C = cfg.n_embd;
  while (in.has("blocks." + std::to_string(cfg.n_layer) + ".ln1.weight")) ++cfg.n_layer;
  if (cfg.n_layer == 0) fail("{}: no layers found (missing 'blocks.0.ln1.weight')", archive->path);

  const TensorInfo& r_k = in.get("blocks.0.att.r_k");
  if (r_k.shape.size() != 2 || r_k.shape[0] <= 0 || r_k.shape[1] <= 0 || r_k.shape[0] * r_k.shape[1] != C)
    fail("{}: tensor 'blocks.0.att.r_k' must be [n_head, head_size] with n_head * head_size = {}", archive->path, C);
  cfg.n_head = r_k.shape[0];
  cfg.head_size = r_k.shape[1];

  // LoRA rank: the dimension of W1 that is not C (official [C, D]; rwkv.cpp [D, C]).
  auto rank_of = [&](const std::string& name) -> int64_t {
    const TensorInfo& t = in.get(name);
    if (t.shape.size() != 2) fail("{}: tensor '{}' must be a matrix", archive->path, name);
    const int64_t d = rwkvcpp ? t.shape[0] : t.shape[1];
    if (d <= 0) fail("{}: tensor '{}' has an empty dimension", archive->path, name);
    return d;
  };
  cfg.lora_w = rank_of("blocks.0.att.w1");
  cfg.lora_a = rank_of("blocks.0.att.a1");
  cfg.lora_g = rank_of("blocks.0.att.g1");
  cfg.lora_v = cfg.n_layer > 1 ? rank_of("blocks.1.att.v1") : 0;
  const TensorInfo& ffn_key = in.get("blocks.0.ffn.key.weight");
  if (ffn_key.shape.size() != 2) fail("{}: tensor 'blocks.0.ffn.key.weight' must be a matrix", archive->path);
  cfg.dim_ffn = ffn_key.shape[0];
  cfg.dtype = in.get("blocks.0.att.receptance.weight").dtype;
  if (variant == V7Variant::DeepEmbed) {
    // D from s1 ([C, D], leading 1s allowed); the official code fixes D = 32.
    const TensorInfo& s1 = in.get("blocks.0.ffn.s1");
    if (s1.shape.size() < 2 || s1.shape.back() <= 0)
      fail("{}: tensor 'blocks.0.ffn.s1' must be [n_embd, D]", archive->path);
    cfg.deep_embed = s1.shape.back();
  }

  auto lora = [&](const std::string& name, int64_t out, int64_t inner) {
    return rwkvcpp ? in.matrix(name, out, inner) : in.matrix_transposed(name, out, inner);
  };

  std::vector<Layer> layers(size_t(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const std::string att = p + "att.";
    Layer& L = layers[size_t(l)];
    L.ln1_w = in.vector(p + "ln1.weight", C);
    L.ln1_b = in.vector(p + "ln1.bias", C);
    L.ln2_w = in.vector(p + "ln2.weight", C);
    L.ln2_b = in.vector(p + "ln2.bias", C);
    const float** mixes[6] = {&L.x_r, &L.x_w, &L.x_k, &L.x_v, &L.x_a, &L.x_g};
    const char* mix_names[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
    const float* packed = rwkvcpp ? in.flat(att + "x_rwkvag", {6, 1, C}) : nullptr;
    for (int i = 0; i < 6; ++i) *mixes[i] = rwkvcpp ? packed + i * C : in.vector(att + mix_names[i], C);
    L.w0 = in.vector(att + "w0", C);
    L.w1 = lora(att + "w1", cfg.lora_w, C);
    L.w2 = lora(att + "w2", C, cfg.lora_w);
    L.a0 = in.vector(att + "a0", C);
    L.a1 = lora(att + "a1", cfg.lora_a, C);
    L.a2 = lora(att + "a2", C, cfg.lora_a);
    if (l > 0) {
      L.v0 = in.vector(att + "v0", C);
      L.v1 = lora(att + "v1", cfg.lora_v, C);
      L.v2 = lora(att + "v2", C, cfg.lora_v);
    } else {
      // Layer 0's value-residual tensors are unused by the official code; accept them when present.
      for (const char* name : {"v0", "v1", "v2"})
        if (in.has(att + name)) in.get(att + name);
    }
    L.g1 = lora(att + "g1", cfg.lora_g, C);
    L.g2 = lora(att + "g2", C, cfg.lora_g);
    L.k_k = in.vector(att + "k_k", C);
    L.k_a = in.vector(att + "k_a", C);
    L.r_k = in.flat(att + "r_k", {cfg.n_head, cfg.head_size});
    L.receptance = in.matrix(att + "receptance.weight", C, C);
    L.key = in.matrix(att + "key.weight", C, C);
    L.value = in.matrix(att + "value.weight", C, C);
    L.output = in.matrix(att + "output.weight", C, C);
    L.ln_x_w = in.vector(att + "ln_x.weight", C);
    L.ln_x_b = in.vector(att + "ln_x.bias", C);
    L.ffn_x_k = in.vector(p + "ffn.x_k", C);
    L.ffn_key = in.matrix(p + "ffn.key.weight", cfg.dim_ffn, C);
    L.ffn_value = in.matrix(p + "ffn.value.weight", C, cfg.dim_ffn);
    if (cfg.deep_embed > 0) {
      const int64_t D = cfg.deep_embed;
      L.s_emb = in.table(p + "ffn.s_emb.weight", cfg.n_vocab, D * D);
      L.s_emb_x = in.matrix(p + "ffn.s_emb_x.weight", D * D, C);
      L.s1 = in.squeezed_matrix_transposed(p + "ffn.s1", D, C);  // stored [C, D]
      L.s2 = in.squeezed_matrix_transposed(p + "ffn.s2", cfg.dim_ffn, D);  // stored [D, F]
      L.s0 = in.vector(p + "ffn.s0", cfg.dim_ffn);
    }
  }
  const float* ln0_w = in.vector("blocks.0.ln0.weight", C);
  const float* ln0_b = in.vector("blocks.0.ln0.bias", C);
  const MatRef emb_ref = in.table("emb.weight", cfg.n_vocab, C);
  const float* ln_out_w = in.vector("ln_out.weight", C);
  const float* ln_out_b = in.vector("ln_out.bias", C);
  const MatRef head = in.matrix("head.weight", cfg.n_vocab, C);
  in.check_all_used();

  for (const TensorInfo& t : archive->tensors()) cfg.n_params += t.numel();
  return std::make_unique<Rwkv7>(std::move(cfg), std::move(storage), emb_ref, ln0_w, ln0_b, std::move(layers),
                                 ln_out_w, ln_out_b, head);
}

}  // namespace rwkv
