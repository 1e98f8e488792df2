#include "train/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "train/gemm.h"
#include "train/parallel.h"

namespace rwkv::train {
namespace {

// The engine's constants (src/model/rwkv7.cpp), which are the official ones.
constexpr double kLayerNormEps = 1e-5;
constexpr double kGroupNormEps = 64e-5;
constexpr double kNormalizeEps = 1e-12;
// Rows of the head and loss computed at once: bounds the logits held to
// kHeadBlock x V.
constexpr int64_t kHeadBlock = 256;

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// y[n] = (x - mean) rstd w + b; returns the statistics the backward needs.
template <typename T>
void ln_forward(const T* x, const T* w, const T* b, int64_t n, T eps, T* y, T* mean_out, T* rstd_out) {
  T mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= T(n);
  T var = 0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= T(n);
  const T rstd = T(1) / std::sqrt(var + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
  *mean_out = mean;
  *rstd_out = rstd;
}

// dx += d(layer norm)/dx^T dy; dw, db += (when not null).
template <typename T>
void ln_backward(const T* x, T mean, T rstd, const T* w, const T* dy, int64_t n, T* dx, T* dw, T* db) {
  T s1 = 0, s2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T xhat = (x[i] - mean) * rstd;
    const T g = dy[i] * w[i];
    s1 += g;
    s2 += g * xhat;
    if (dw) dw[i] += dy[i] * xhat;
    if (db) db[i] += dy[i];
  }
  s1 /= T(n);
  s2 /= T(n);
  for (int64_t i = 0; i < n; ++i) {
    const T xhat = (x[i] - mean) * rstd;
    dx[i] += rstd * (dy[i] * w[i] - s1 - xhat * s2);
  }
}

// sum_j a[j] b[j] with 8 independent partial sums, which the compiler can
// keep in vector registers (one running sum may not be reordered).
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T acc[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[j + u] * b[j + u];
  for (; j < n; ++j) acc[0] += a[j] * b[j];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// One step of the recurrence on one head's state S [N, N] (row i = value channel):
//   S = S diag(w) + (S (-kk)) (kk a)^T + v k^T;  y = S r.
template <typename T>
void wkv_step(T* S, int64_t N, const T* r, const T* w, const T* k, const T* v, const T* kk, const T* a, T* y) {
  for (int64_t i = 0; i < N; ++i) {
    T* row = S + i * N;
    const T sa = -dot(row, kk, N);
    for (int64_t j = 0; j < N; ++j) row[j] = row[j] * w[j] + sa * (kk[j] * a[j]) + v[i] * k[j];
    y[i] = dot(row, r, N);
  }
}

}  // namespace

template <typename T>
struct TrainModel<T>::Impl {
  TrainModel<T>& m;
  int64_t B = 0, Tn = 0, R = 0, n_chunks = 0;
  // Kept by the forward for the backward.
  std::vector<T> x_layers;  // [L + 1, R, C]: each layer's input, then the last layer's output
  std::vector<T> ln0_mean, ln0_rstd, v_first;
  // One layer's activations (recomputed per layer in the backward).
  std::vector<T> ln1_mean, ln1_rstd, xn1, mix, r, k0, v0, k, v, wl, wsig, w, al, a, vl, vg, gl, g, kk, kk_norm, y,
      gn_mean, gn_rstd, bonus, z, xmid, ln2_mean, ln2_rstd, xn2, xk2, hpre, h;
  std::vector<T> ckpt;  // [B, H, n_chunks, N, N] wkv state at the start of each chunk
  // Backward scratch.
  std::vector<T> dx, dxmid, dxn, dmix, dr, dk, dv, dw, da, dg, dkk, dy, dz, dlora, dffn, dv_first, dS0, tmp;
  std::vector<T> head_x, head_logits, head_dlogits, head_dx, ln_out_mean, ln_out_rstd;

  explicit Impl(TrainModel<T>& model) : m(model) {}

  void reserve(int64_t b, int64_t t) {
    const TrainConfig& c = m.config();
    const int64_t C = c.n_embd, H = c.n_head(), N = c.head_size, F = c.dim_ffn;
    if (b == B && t == Tn) return;
    B = b;
    Tn = t;
    R = b * t;
    n_chunks = (t + m.chunk_len_ - 1) / m.chunk_len_;
    const size_t rc = size_t(R * C), rh = size_t(R * H), rr = size_t(R);
    x_layers.assign(size_t(c.n_layer + 1) * rc, T(0));
    for (auto* vec : {&ln0_mean, &ln0_rstd, &ln1_mean, &ln1_rstd, &ln2_mean, &ln2_rstd}) vec->assign(rr, T(0));
    for (auto* vec :
         {&v_first, &xn1, &r,  &k0,    &v0,  &k,  &v,  &wsig, &w,  &a,  &vg, &g,   &kk, &y,  &z,        &xmid,
          &xn2,     &xk2, &dx, &dxmid, &dxn, &dr, &dk, &dv,   &dw, &da, &dg, &dkk, &dy, &dz, &dv_first, &tmp})
      vec->assign(rc, T(0));
    for (auto* vec : {&kk_norm, &gn_mean, &gn_rstd, &bonus}) vec->assign(rh, T(0));
    mix.assign(6 * rc, T(0));
    dmix.assign(6 * rc, T(0));
    wl.assign(size_t(R * c.lora_w), T(0));
    al.assign(size_t(R * c.lora_a), T(0));
    vl.assign(size_t(R * c.lora_v), T(0));
    gl.assign(size_t(R * c.lora_g), T(0));
    dlora.assign(size_t(R * std::max({c.lora_w, c.lora_a, c.lora_v, c.lora_g})), T(0));
    hpre.assign(size_t(R * F), T(0));
    h.assign(size_t(R * F), T(0));
    dffn.assign(size_t(R * F), T(0));
    ckpt.assign(size_t(B * H * n_chunks * N * N), T(0));
    dS0.assign(size_t(B * H * N * N), T(0));
  }

  size_t layer_state_size() const {
    const TrainConfig& c = m.config();
    return size_t(2 * c.n_embd + c.n_head() * c.head_size * c.head_size);
  }

  // Token shift: out[row] = x[row] + (x[row - 1] - x[row]) mu, with the
  // sequence's first row taking `prev` (the initial state's shift vector).
  void shift_mix(const T* x, const T* prev, const T* mu, T* out) const {
    const int64_t C = m.config().n_embd;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < Tn; ++t) {
        const int64_t row = b * Tn + t;
        const T* cur = x + row * C;
        const T* before = t == 0 ? prev : cur - C;
        T* o = out + row * C;
        for (int64_t c = 0; c < C; ++c) o[c] = cur[c] + (before[c] - cur[c]) * mu[c];
      }
  }

  // Backward of `count` token-shift mixes of the same x: dmixes[i] are the
  // gradients of the mixed outputs; adds to dx, dmus[i] and dprev.
  void shift_mix_backward(const T* x, const T* prev, T* const* mus, const T* const* dmixes, int count, T* dx,
                          T* const* dmus, T* dprev) const {
    const int64_t C = m.config().n_embd;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < Tn; ++t) {
        const int64_t row = b * Tn + t;
        const T* cur = x + row * C;
        const T* before = t == 0 ? prev : cur - C;
        T* dcur = dx + row * C;
        T* dbefore = t == 0 ? dprev : dcur - C;
        for (int i = 0; i < count; ++i) {
          const T* d = dmixes[i] + row * C;
          const T* mu = mus[i];
          T* dmu = dmus[i];
          for (int64_t c = 0; c < C; ++c) {
            if (dmu) dmu[c] += d[c] * (before[c] - cur[c]);
            dcur[c] += d[c] * (T(1) - mu[c]);
            if (dbefore) dbefore[c] += d[c] * mu[c];
          }
        }
      }
  }

  // The layer's forward from x_in [R, C] into x_out [R, C], keeping every
  // activation the backward needs.
  void forward_layer(int64_t l, const T* x_in, T* x_out) {
    const TrainConfig& c = m.config();
    const int64_t C = c.n_embd, H = c.n_head(), N = c.head_size, F = c.dim_ffn;
    const LayerView<T> P = bind<T>(m.layout_, m.params.data()).layers[size_t(l)];
    const T* st = m.state.data() + size_t(l) * layer_state_size();
    const T* st_att = st;
    const T* st_wkv = st + C;
    const T* st_ffn = st + C + H * N * N;
    const size_t rc = size_t(R * C);

    for (int64_t row = 0; row < R; ++row)
      ln_forward(x_in + row * C, P.ln1_w, P.ln1_b, C, T(kLayerNormEps), xn1.data() + row * C, &ln1_mean[size_t(row)],
                 &ln1_rstd[size_t(row)]);
    T *xr = mix.data(), *xw = xr + rc, *xk = xw + rc, *xv = xk + rc, *xa = xv + rc, *xg = xa + rc;
    const T* mus[6] = {P.x_r, P.x_w, P.x_k, P.x_v, P.x_a, P.x_g};
    for (int i = 0; i < 6; ++i) shift_mix(xn1.data(), st_att, mus[i], mix.data() + size_t(i) * rc);

    linear_forward(xr, P.receptance, R, C, C, r.data());
    linear_forward(xk, P.key, R, C, C, k0.data());
    linear_forward(xv, P.value, R, C, C, v0.data());

    // decay w = exp(-e^-0.5 sigmoid(w0 + tanh(xw w1) w2))
    right_forward(xw, P.w1, R, C, c.lora_w, wl.data());
    for (T& e : wl) e = std::tanh(e);
    right_forward(wl.data(), P.w2, R, c.lora_w, C, w.data());
    const T decay_scale = T(std::exp(-0.5));
    for (int64_t i = 0; i < R * C; ++i) {
      const T s = sigmoid(P.w0[i % C] + w[size_t(i)]);
      wsig[size_t(i)] = s;
      w[size_t(i)] = std::exp(-decay_scale * s);
    }
    // in-context learning rate a = sigmoid(a0 + xa a1 a2)
    right_forward(xa, P.a1, R, C, c.lora_a, al.data());
    right_forward(al.data(), P.a2, R, c.lora_a, C, a.data());
    for (int64_t i = 0; i < R * C; ++i) a[size_t(i)] = sigmoid(P.a0[i % C] + a[size_t(i)]);
    // value residual
    if (l == 0) {
      std::copy(v0.begin(), v0.end(), v.begin());
      std::copy(v0.begin(), v0.end(), v_first.begin());
    } else {
      right_forward(xv, P.v1, R, C, c.lora_v, vl.data());
      right_forward(vl.data(), P.v2, R, c.lora_v, C, vg.data());
      for (int64_t i = 0; i < R * C; ++i) {
        const size_t u = size_t(i);
        vg[u] = sigmoid(P.v0[i % C] + vg[u]);
        v[u] = v0[u] + (v_first[u] - v0[u]) * vg[u];
      }
    }
    // gate g = sigmoid(xg g1) g2
    right_forward(xg, P.g1, R, C, c.lora_g, gl.data());
    for (T& e : gl) e = sigmoid(e);
    right_forward(gl.data(), P.g2, R, c.lora_g, C, g.data());

    // kk = normalize(k0 k_k) per head; k = k0 (1 + (a - 1) k_a)
    for (int64_t row = 0; row < R; ++row)
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t o = row * C + hh * N;
        T sq = 0;
        for (int64_t j = 0; j < N; ++j) {
          kk[size_t(o + j)] = k0[size_t(o + j)] * P.k_k[hh * N + j];
          sq += kk[size_t(o + j)] * kk[size_t(o + j)];
        }
        const T norm = std::sqrt(sq);
        kk_norm[size_t(row * H + hh)] = norm;
        const T inv = T(1) / std::max(norm, T(kNormalizeEps));
        for (int64_t j = 0; j < N; ++j) kk[size_t(o + j)] *= inv;
      }
    for (int64_t i = 0; i < R * C; ++i) k[size_t(i)] = k0[size_t(i)] * (T(1) + (a[size_t(i)] - T(1)) * P.k_a[i % C]);

    // the recurrence, one (sequence, head) per task
    parallel_for(B * H, [&](int64_t bh) {
      const int64_t b = bh / H, hh = bh % H;
      std::vector<T> S(st_wkv + hh * N * N, st_wkv + (hh + 1) * N * N);
      T* saved = ckpt.data() + size_t(bh * n_chunks * N * N);
      for (int64_t t = 0; t < Tn; ++t) {
        if (t % m.chunk_len_ == 0) std::copy(S.begin(), S.end(), saved + (t / m.chunk_len_) * N * N);
        const size_t o = size_t((b * Tn + t) * C + hh * N);
        wkv_step(S.data(), N, &r[o], &w[o], &k[o], &v[o], &kk[o], &a[o], &y[o]);
      }
    });

    // ln_x per head, the r.k bonus, the gate, the output projection
    for (int64_t row = 0; row < R; ++row)
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t o = row * C + hh * N;
        const size_t rh = size_t(row * H + hh);
        ln_forward(&y[size_t(o)], P.ln_x_w + hh * N, P.ln_x_b + hh * N, N, T(kGroupNormEps), &z[size_t(o)],
                   &gn_mean[rh], &gn_rstd[rh]);
        T bon = 0;
        for (int64_t j = 0; j < N; ++j) bon += r[size_t(o + j)] * k[size_t(o + j)] * P.r_k[hh * N + j];
        bonus[rh] = bon;
        for (int64_t i = 0; i < N; ++i) z[size_t(o + i)] += bon * v[size_t(o + i)];
      }
    for (size_t i = 0; i < rc; ++i) tmp[i] = z[i] * g[i];
    linear_forward(tmp.data(), P.output, R, C, C, xmid.data());
    for (size_t i = 0; i < rc; ++i) xmid[i] += x_in[i];

    // channel mix
    for (int64_t row = 0; row < R; ++row)
      ln_forward(&xmid[size_t(row * C)], P.ln2_w, P.ln2_b, C, T(kLayerNormEps), &xn2[size_t(row * C)],
                 &ln2_mean[size_t(row)], &ln2_rstd[size_t(row)]);
    shift_mix(xn2.data(), st_ffn, P.ffn_x_k, xk2.data());
    linear_forward(xk2.data(), P.ffn_key, R, C, F, hpre.data());
    for (size_t i = 0; i < h.size(); ++i) {
      const T relu = std::max(hpre[i], T(0));
      h[i] = relu * relu;
    }
    linear_forward(h.data(), P.ffn_value, R, F, C, x_out);
    for (size_t i = 0; i < rc; ++i) x_out[i] += xmid[i];
  }

  // Backward of forward_layer(l) (whose activations must be current): dx holds
  // the gradient of x_out on entry and of x_in on return.
  void backward_layer(int64_t l, const T* x_in) {
    const TrainConfig& c = m.config();
    const int64_t C = c.n_embd, H = c.n_head(), N = c.head_size, F = c.dim_ffn;
    const LayerView<T> P = bind<T>(m.layout_, m.params.data()).layers[size_t(l)];
    const LayerView<T> G = m.grad_view().layers[size_t(l)];  // null where no gradient is wanted
    const size_t rc = size_t(R * C);
    const size_t per_layer = layer_state_size();
    const T* st = m.state.data() + size_t(l) * per_layer;
    T* dst = m.state_grad.data() + size_t(l) * per_layer;
    T *dst_att = dst, *dst_wkv = dst + C, *dst_ffn = dst + C + H * N * N;

    // ---- channel mix: x_out = xmid + relu(xk2 Wk^T)^2 Wv^T
    dxmid = dx;
    linear_backward(h.data(), P.ffn_value, dx.data(), R, F, C, G.ffn_value, dffn.data(), T(0));
    for (size_t i = 0; i < dffn.size(); ++i) dffn[i] *= T(2) * std::max(hpre[i], T(0));
    linear_backward(xk2.data(), P.ffn_key, dffn.data(), R, C, F, G.ffn_key, dmix.data(), T(0));
    std::fill(dxn.begin(), dxn.end(), T(0));
    {
      T* mus[1] = {P.ffn_x_k};
      const T* dm[1] = {dmix.data()};
      T* dmus[1] = {G.ffn_x_k};
      shift_mix_backward(xn2.data(), st + C + H * N * N, mus, dm, 1, dxn.data(), dmus, dst_ffn);
    }
    for (int64_t row = 0; row < R; ++row)
      ln_backward(&xmid[size_t(row * C)], ln2_mean[size_t(row)], ln2_rstd[size_t(row)], P.ln2_w, &dxn[size_t(row * C)],
                  C, &dxmid[size_t(row * C)], G.ln2_w, G.ln2_b);

    // ---- time mix: xmid = x_in + (z g) Wo^T
    for (size_t i = 0; i < rc; ++i) tmp[i] = z[i] * g[i];
    linear_backward(tmp.data(), P.output, dxmid.data(), R, C, C, G.output, dz.data(), T(0));
    for (size_t i = 0; i < rc; ++i) {
      dg[i] = dz[i] * z[i];
      dz[i] *= g[i];
    }
    // z = ln_x(y) + bonus v, bonus = sum_j r k r_k per head
    std::fill(dy.begin(), dy.end(), T(0));
    for (int64_t row = 0; row < R; ++row)
      for (int64_t hh = 0; hh < H; ++hh) {
        const size_t o = size_t(row * C + hh * N), rh = size_t(row * H + hh);
        T dbon = 0;
        for (int64_t i = 0; i < N; ++i) {
          dv[o + size_t(i)] = dz[o + size_t(i)] * bonus[rh];
          dbon += dz[o + size_t(i)] * v[o + size_t(i)];
        }
        for (int64_t j = 0; j < N; ++j) {
          const size_t u = o + size_t(j);
          const T rk = P.r_k[hh * N + j];
          dr[u] = dbon * k[u] * rk;
          dk[u] = dbon * r[u] * rk;
          if (G.r_k) G.r_k[hh * N + j] += dbon * r[u] * k[u];
        }
        ln_backward(&y[o], gn_mean[rh], gn_rstd[rh], P.ln_x_w + hh * N, &dz[o], N, &dy[o],
                    G.ln_x_w ? G.ln_x_w + hh * N : nullptr, G.ln_x_b ? G.ln_x_b + hh * N : nullptr);
      }

    // the recurrence, backwards through each chunk from its saved state
    parallel_for(B * H, [&](int64_t bh) { wkv_backward(bh); });
    for (int64_t hh = 0; hh < H; ++hh)
      for (int64_t b = 0; b < B; ++b) {
        const T* src = dS0.data() + size_t((b * H + hh) * N * N);
        T* out = dst_wkv + hh * N * N;
        for (int64_t i = 0; i < N * N; ++i) out[i] += src[i];
      }

    // k = k0 (1 + (a - 1) k_a); kk = normalize(k0 k_k)
    for (int64_t i = 0; i < R * C; ++i) {
      const size_t u = size_t(i);
      const int64_t ch = i % C;
      const T ka = P.k_a[ch];
      da[u] += dk[u] * k0[u] * ka;
      if (G.k_a) G.k_a[ch] += dk[u] * k0[u] * (a[u] - T(1));
      dk[u] *= T(1) + (a[u] - T(1)) * ka;  // now d k0
    }
    for (int64_t row = 0; row < R; ++row)
      for (int64_t hh = 0; hh < H; ++hh) {
        const size_t o = size_t(row * C + hh * N);
        const T norm = kk_norm[size_t(row * H + hh)];
        T dot = 0;
        if (norm > T(kNormalizeEps))
          for (int64_t j = 0; j < N; ++j) dot += kk[o + size_t(j)] * dkk[o + size_t(j)];
        const T inv = T(1) / std::max(norm, T(kNormalizeEps));
        for (int64_t j = 0; j < N; ++j) {
          const size_t u = o + size_t(j);
          const T du = (dkk[u] - kk[u] * dot) * inv;
          dk[u] += du * P.k_k[hh * N + j];
          if (G.k_k) G.k_k[hh * N + j] += du * k0[u];
        }
      }

    T *xr = mix.data(), *xw = xr + rc, *xk = xw + rc, *xv = xk + rc, *xa = xv + rc, *xg = xa + rc;
    T *dxr = dmix.data(), *dxw = dxr + rc, *dxk = dxw + rc, *dxv = dxk + rc, *dxa = dxv + rc, *dxg = dxa + rc;

    // decay: dw -> d(w0 + tanh(xw w1) w2)
    const T decay_scale = T(std::exp(-0.5));
    for (size_t i = 0; i < rc; ++i) {
      dw[i] *= -decay_scale * w[i] * wsig[i] * (T(1) - wsig[i]);
      if (G.w0) G.w0[i % size_t(C)] += dw[i];
    }
    right_backward(wl.data(), P.w2, dw.data(), R, c.lora_w, C, G.w2, dlora.data(), T(0));
    for (int64_t i = 0; i < R * c.lora_w; ++i) dlora[size_t(i)] *= T(1) - wl[size_t(i)] * wl[size_t(i)];
    right_backward(xw, P.w1, dlora.data(), R, C, c.lora_w, G.w1, dxw, T(0));

    // a = sigmoid(a0 + xa a1 a2)
    for (size_t i = 0; i < rc; ++i) {
      da[i] *= a[i] * (T(1) - a[i]);
      if (G.a0) G.a0[i % size_t(C)] += da[i];
    }
    right_backward(al.data(), P.a2, da.data(), R, c.lora_a, C, G.a2, dlora.data(), T(0));
    right_backward(xa, P.a1, dlora.data(), R, C, c.lora_a, G.a1, dxa, T(0));

    // v = v0 + (v_first - v0) sigmoid(v0p + xv v1 v2); layer 0 publishes v_first
    if (l == 0) {
      for (size_t i = 0; i < rc; ++i) dv[i] += dv_first[i];
      std::fill(dxv, dxv + rc, T(0));
    } else {
      for (size_t i = 0; i < rc; ++i) {
        const T s = vg[i];
        const T dpre = dv[i] * (v_first[i] - v0[i]) * s * (T(1) - s);
        dv_first[i] += dv[i] * s;
        dv[i] *= T(1) - s;
        tmp[i] = dpre;
        if (G.v0) G.v0[i % size_t(C)] += dpre;
      }
      right_backward(vl.data(), P.v2, tmp.data(), R, c.lora_v, C, G.v2, dlora.data(), T(0));
      right_backward(xv, P.v1, dlora.data(), R, C, c.lora_v, G.v1, dxv, T(0));
    }

    // g = sigmoid(xg g1) g2
    right_backward(gl.data(), P.g2, dg.data(), R, c.lora_g, C, G.g2, dlora.data(), T(0));
    for (int64_t i = 0; i < R * c.lora_g; ++i) dlora[size_t(i)] *= gl[size_t(i)] * (T(1) - gl[size_t(i)]);
    right_backward(xg, P.g1, dlora.data(), R, C, c.lora_g, G.g1, dxg, T(0));

    // r, k, v projections
    linear_backward(xr, P.receptance, dr.data(), R, C, C, G.receptance, dxr, T(0));
    linear_backward(xk, P.key, dk.data(), R, C, C, G.key, dxk, T(0));
    linear_backward(xv, P.value, dv.data(), R, C, C, G.value, dxv, T(1));

    // token shifts and ln1
    std::fill(dxn.begin(), dxn.end(), T(0));
    {
      T* mus[6] = {P.x_r, P.x_w, P.x_k, P.x_v, P.x_a, P.x_g};
      const T* dm[6] = {dxr, dxw, dxk, dxv, dxa, dxg};
      T* dmus[6] = {G.x_r, G.x_w, G.x_k, G.x_v, G.x_a, G.x_g};
      shift_mix_backward(xn1.data(), st, mus, dm, 6, dxn.data(), dmus, dst_att);
    }
    dx = dxmid;
    for (int64_t row = 0; row < R; ++row)
      ln_backward(x_in + row * C, ln1_mean[size_t(row)], ln1_rstd[size_t(row)], P.ln1_w, &dxn[size_t(row * C)], C,
                  &dx[size_t(row * C)], G.ln1_w, G.ln1_b);
  }

  // Backward of the recurrence for one (sequence, head): given dy, adds to dr,
  // dk, dv; sets dw (of the decay factor), dkk, da; leaves the gradient of the
  // initial wkv state in dS0.
  void wkv_backward(int64_t bh) {
    const TrainConfig& c = m.config();
    const int64_t C = c.n_embd, H = c.n_head(), N = c.head_size, NN = N * N;
    const int64_t b = bh / H, hh = bh % H;
    const int64_t L = m.chunk_len_;
    const size_t nn = static_cast<size_t>(NN), n = static_cast<size_t>(N);
    // Per-thread scratch, kept between calls: states alone is (L + 1) N^2 floats,
    // large enough that allocating it per call costs page faults.
    thread_local std::vector<T> states, dS, Gm, sa, dsa, bk, scratch, acc;
    states.resize(static_cast<size_t>(L + 1) * nn);  // states[s] = state before token t0 + s
    dS.assign(nn, T(0));
    Gm.resize(nn);
    for (auto* v : {&sa, &dsa, &bk, &scratch}) v->resize(n);
    acc.resize(5 * n);
    const T* saved = ckpt.data() + size_t(bh * n_chunks * NN);
    for (int64_t ch = n_chunks - 1; ch >= 0; --ch) {
      const int64_t t0 = ch * L, t1 = std::min(Tn, t0 + L);
      std::copy(saved + ch * NN, saved + (ch + 1) * NN, states.begin());
      for (int64_t t = t0; t < t1; ++t) {
        T* S = states.data() + (t - t0 + 1) * NN;
        std::copy(S - NN, S, S);
        const size_t o = size_t((b * Tn + t) * C + hh * N);
        wkv_step(S, N, &r[o], &w[o], &k[o], &v[o], &kk[o], &a[o], scratch.data());
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const size_t o = size_t((b * Tn + t) * C + hh * N);
        const T* Sp = states.data() + (t - t0) * NN;  // before token t
        const T* Sc = Sp + NN;                        // after token t
        const T *rt = &r[o], *wt = &w[o], *kt = &k[o], *vt = &v[o], *kkt = &kk[o], *at = &a[o], *dyt = &dy[o];
        for (int64_t j = 0; j < N; ++j) bk[size_t(j)] = kkt[j] * at[j];
        // The sums over i below run with i outermost, so each is a vector
        // operation over the contiguous j.
        std::fill(acc.begin(), acc.end(), T(0));
        T *dr_j = acc.data(), *dw_j = dr_j + N, *dk_j = dw_j + N, *db_j = dk_j + N, *da_j = db_j + N;
        // y = Sc r
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j) dr_j[j] += Sc[i * N + j] * dyt[i];
        // G = dL/dSc, including this token's read-out; sa = Sp (-kk)
        for (int64_t i = 0; i < N; ++i) {
          T* g = &Gm[size_t(i * N)];
          const T* d = &dS[size_t(i * N)];
          for (int64_t j = 0; j < N; ++j) g[j] = d[j] + dyt[i] * rt[j];
          sa[size_t(i)] = -dot(Sp + i * N, kkt, N);
        }
        // Sc = Sp diag(w) + sa bk^T + v k^T
        for (int64_t i = 0; i < N; ++i) {
          const T* g = &Gm[size_t(i * N)];
          dv[o + size_t(i)] += dot(g, kt, N);
          dsa[size_t(i)] = dot(g, bk.data(), N);
        }
        for (int64_t i = 0; i < N; ++i) {
          const T* g = &Gm[size_t(i * N)];
          const T* sp = Sp + i * N;
          const T vi = vt[i], sai = sa[size_t(i)], dsai = dsa[size_t(i)];
          for (int64_t j = 0; j < N; ++j) {
            dw_j[j] += g[j] * sp[j];
            dk_j[j] += g[j] * vi;
            db_j[j] += g[j] * sai;
            da_j[j] += sp[j] * dsai;  // d(-kk)
          }
        }
        for (int64_t j = 0; j < N; ++j) {
          dr[o + size_t(j)] += dr_j[j];
          dw[o + size_t(j)] = dw_j[j];
          dk[o + size_t(j)] += dk_j[j];
          // -kk enters as the removal key, kk a as the replacement weights
          dkk[o + size_t(j)] = -da_j[j] + db_j[j] * at[j];
          da[o + size_t(j)] = db_j[j] * kkt[j];
        }
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j)
            dS[size_t(i * N + j)] = Gm[size_t(i * N + j)] * wt[j] - dsa[size_t(i)] * kkt[j];
      }
    }
    std::copy(dS.begin(), dS.end(), dS0.begin() + bh * NN);
  }

  void check_ids(std::span<const int32_t> ids, bool allow_ignore, const char* what) const {
    const int64_t V = m.config().n_vocab;
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] >= V || ids[i] < (allow_ignore ? -1 : 0))
        fail("{} id {} at position {} is outside the vocabulary of {}", what, ids[i], i, V);
  }

  // Embedding, ln0 and every layer; fills x_layers.
  void forward_all(std::span<const int32_t> tokens) {
    const TrainConfig& c = m.config();
    const int64_t C = c.n_embd;
    const ModelView<T> P = bind<T>(m.layout_, m.params.data());
    for (int64_t row = 0; row < R; ++row)
      ln_forward(P.emb + int64_t(tokens[size_t(row)]) * C, P.ln0_w, P.ln0_b, C, T(kLayerNormEps),
                 &x_layers[size_t(row * C)], &ln0_mean[size_t(row)], &ln0_rstd[size_t(row)]);
    const size_t rc = size_t(R * C);
    for (int64_t l = 0; l < c.n_layer; ++l)
      forward_layer(l, x_layers.data() + size_t(l) * rc, x_layers.data() + size_t(l + 1) * rc);
  }

  // ln_out of rows [r0, r0 + n) of the last residual into head_x, logits into head_logits.
  void head_forward(int64_t r0, int64_t n) {
    const TrainConfig& c = m.config();
    const int64_t C = c.n_embd;
    const ModelView<T> P = bind<T>(m.layout_, m.params.data());
    const T* xf = x_layers.data() + size_t(c.n_layer) * size_t(R * C);
    head_x.resize(size_t(kHeadBlock * C));
    head_logits.resize(size_t(kHeadBlock * c.n_vocab));
    ln_out_mean.resize(size_t(R));
    ln_out_rstd.resize(size_t(R));
    for (int64_t i = 0; i < n; ++i)
      ln_forward(xf + (r0 + i) * C, P.ln_out_w, P.ln_out_b, C, T(kLayerNormEps), &head_x[size_t(i * C)],
                 &ln_out_mean[size_t(r0 + i)], &ln_out_rstd[size_t(r0 + i)]);
    linear_forward(head_x.data(), P.head, n, C, c.n_vocab, head_logits.data());
  }
};

template <typename T>
TrainModel<T>::TrainModel(const TrainConfig& config, int64_t chunk_len)
    : layout_(config), chunk_len_(chunk_len), impl_(std::make_unique<Impl>(*this)) {
  if (chunk_len <= 0) fail("chunk length must be positive (got {})", chunk_len);
  params.assign(layout_.size(), T(0));
  grads.assign(layout_.size(), T(0));
  state.assign(state_size(), T(0));
  state_grad.assign(state_size(), T(0));
}

template <typename T>
TrainModel<T>::~TrainModel() = default;

template <typename T>
size_t TrainModel<T>::state_size() const {
  return size_t(config().n_layer) * impl_->layer_state_size();
}

template <typename T>
ModelView<T> TrainModel<T>::grad_view() {
  if (!grad_mask.empty() && grad_mask.size() != layout_.tensors().size())
    fail("grad_mask has {} flags for {} tensors", grad_mask.size(), layout_.tensors().size());
  if (!param_grads) {
    const std::vector<bool> none(layout_.tensors().size(), false);
    return bind<T>(layout_, grads.data(), &none);
  }
  return bind<T>(layout_, grads.data(), grad_mask.empty() ? nullptr : &grad_mask);
}

template <typename T>
void TrainModel<T>::zero_grads() {
  std::fill(grads.begin(), grads.end(), T(0));
  std::fill(state_grad.begin(), state_grad.end(), T(0));
}

template <typename T>
void TrainModel<T>::forward_logits(std::span<const int32_t> tokens, int64_t B, int64_t T_, T* logits) {
  if (B <= 0 || T_ <= 0 || int64_t(tokens.size()) != B * T_)
    fail("forward: {} tokens do not form a batch of {} x {}", tokens.size(), B, T_);
  Impl& s = *impl_;
  s.check_ids(tokens, false, "token");
  s.reserve(B, T_);
  s.forward_all(tokens);
  const int64_t V = config().n_vocab;
  for (int64_t r0 = 0; r0 < s.R; r0 += kHeadBlock) {
    const int64_t n = std::min(kHeadBlock, s.R - r0);
    s.head_forward(r0, n);
    std::copy(s.head_logits.begin(), s.head_logits.begin() + n * V, logits + r0 * V);
  }
}

template <typename T>
double TrainModel<T>::loss(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B, int64_t T_,
                           const LossOptions& options, bool backward, int64_t* count_out) {
  if (B <= 0 || T_ <= 0 || int64_t(tokens.size()) != B * T_ || targets.size() != tokens.size())
    fail("loss: {} tokens and {} targets do not form a batch of {} x {}", tokens.size(), targets.size(), B, T_);
  Impl& s = *impl_;
  s.check_ids(tokens, false, "token");
  s.check_ids(targets, true, "target");
  int64_t count = 0;
  for (int32_t t : targets) count += t >= 0;
  if (count_out) *count_out = count;
  s.reserve(B, T_);
  s.forward_all(tokens);

  const TrainConfig& c = config();
  const int64_t C = c.n_embd, V = c.n_vocab, R = s.R;
  const ModelView<T> P = bind<T>(layout_, params.data());
  const ModelView<T> G = grad_view();
  const T* xf = s.x_layers.data() + size_t(c.n_layer) * size_t(R * C);
  if (backward) std::fill(s.dx.begin(), s.dx.end(), T(0));
  const double grad_scale = count > 0 ? options.scale / double(count) : 0.0;
  double total = 0.0;
  for (int64_t r0 = 0; r0 < R; r0 += kHeadBlock) {
    const int64_t n = std::min(kHeadBlock, R - r0);
    s.head_forward(r0, n);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t target = targets[size_t(r0 + i)];
      T* z = s.head_logits.data() + i * V;
      if (target < 0) {
        std::fill(z, z + V, T(0));  // no gradient from an uncounted position
        continue;
      }
      int64_t arg = 0;
      for (int64_t j = 1; j < V; ++j)
        if (z[j] > z[arg]) arg = j;
      const double mx = double(z[arg]);
      double sum = 0.0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(z[j]) - mx);
      const double lse = mx + std::log(sum);
      total += lse - double(z[target]);
      if (!backward) continue;
      for (int64_t j = 0; j < V; ++j) z[j] = T(std::exp(double(z[j]) - lse) * grad_scale);
      z[target] -= T(grad_scale);
      if (options.l2wrap) z[arg] += T(grad_scale * 1e-4 * mx);
    }
    if (!backward) continue;
    // logits = x head^T: dhead += dlogits^T x, dx = dlogits head
    s.head_dx.resize(size_t(kHeadBlock * C));
    linear_backward(s.head_x.data(), P.head, s.head_logits.data(), n, C, V, G.head, s.head_dx.data(), T(0));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = r0 + i;
      ln_backward(xf + row * C, s.ln_out_mean[size_t(row)], s.ln_out_rstd[size_t(row)], P.ln_out_w,
                  &s.head_dx[size_t(i * C)], C, &s.dx[size_t(row * C)], G.ln_out_w, G.ln_out_b);
    }
  }
  if (!backward) return count > 0 ? total / double(count) : 0.0;

  std::fill(s.dv_first.begin(), s.dv_first.end(), T(0));
  const size_t rc = size_t(R * C);
  for (int64_t l = c.n_layer - 1; l >= 0; --l) {
    const T* x_in = s.x_layers.data() + size_t(l) * rc;
    // The last layer's activations are still those of the forward.
    if (l != c.n_layer - 1) s.forward_layer(l, x_in, s.dxn.data());  // x_out is not needed again
    s.backward_layer(l, x_in);
  }
  if (G.emb || G.ln0_w || G.ln0_b) {
    std::vector<T> de(static_cast<size_t>(C));
    for (int64_t row = 0; row < R; ++row) {
      std::fill(de.begin(), de.end(), T(0));
      const int64_t tok = tokens[size_t(row)];
      ln_backward(P.emb + tok * C, s.ln0_mean[size_t(row)], s.ln0_rstd[size_t(row)], P.ln0_w, &s.dx[size_t(row * C)], C,
                  de.data(), G.ln0_w, G.ln0_b);
      if (G.emb)
        for (int64_t i = 0; i < C; ++i) G.emb[tok * C + i] += de[size_t(i)];
    }
  }
  return count > 0 ? total / double(count) : 0.0;
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace rwkv::train
