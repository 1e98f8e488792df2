#include "model/rwkv4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/kernels.h"
#include "model/weights.h"

namespace rwkv {
namespace {

constexpr float kLayerNormEps = 1e-5f;
// The official initial pp: an exponent so low that exp(pp - anything) is 0,
// yet finite so that pp + w stays ordinary arithmetic.
constexpr float kInitialPp = -1e30f;

struct Layer {
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  const float *mix_k, *mix_v, *mix_r;
  const float* decay;  // w = -exp(time_decay): log of the per-token decay, < 0
  const float* first;  // u: the current token's extra log-weight
  MatRef key, value, receptance, output;
  const float *ffn_mix_k, *ffn_mix_r;
  MatRef ffn_key, ffn_value, ffn_receptance;
};

struct Rwkv4Workspace : Workspace {
  int64_t capacity = 0;
  std::vector<float> x, xn, xk, xv, xr, k, v, r, y, ffn;

  void reserve(int64_t t, const ModelConfig& c) {
    if (t <= capacity) return;
    capacity = t;
    const size_t tc = static_cast<size_t>(t * c.n_embd);
    for (auto* b : {&x, &xn, &xk, &xv, &xr, &k, &v, &r, &y}) b->assign(tc, 0.0f);
    ffn.assign(static_cast<size_t>(t * c.dim_ffn), 0.0f);
  }
};

// out[t] = x[t] * mix + x[t-1] * (1 - mix), with x[-1] = prev: the RWKV-4/5
// token shift, written as the official code writes it.
void token_shift(const float* x, const float* prev, const float* mix, int64_t T, int64_t C, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const float* cur = x + t * C;
    const float* before = t == 0 ? prev : x + (t - 1) * C;
    for (int64_t c = 0; c < C; ++c) out[t * C + c] = cur[c] * mix[c] + before[c] * (1.0f - mix[c]);
  }
}

class Rwkv4 final : public Model {
 public:
  Rwkv4(ModelConfig config, WeightStorage storage, MatRef emb, const float* ln0_w, const float* ln0_b,
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

  // Per layer, five vectors of C floats, in the official order:
  //   att_x (previous ln1 output), aa, bb, pp (the WKV numerator, denominator
  //   and their factored-out exponent), ffn_x (previous ln2 output).
  // A fresh state is all zeros. bb is >= 1 once a token has been seen, so a
  // channel with bb == 0 has seen none, and its pp is read as the official
  // initial -1e30 (a zero-filled State cannot hold that value itself).
  size_t state_size() const override { return static_cast<size_t>(config_.n_layer * 5 * config_.n_embd); }
  std::unique_ptr<Workspace> new_workspace() const override { return std::make_unique<Rwkv4Workspace>(); }

 protected:
  void forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                    Workspace& workspace) const override;

 private:
  void time_mix(const Layer& L, int64_t T, float* state, Rwkv4Workspace& ws) const;
  void channel_mix(const Layer& L, int64_t T, float* state, Rwkv4Workspace& ws) const;

  WeightStorage storage_;
  MatRef emb_;
  const float *ln0_w_, *ln0_b_;
  std::vector<Layer> layers_;
  const float *ln_out_w_, *ln_out_b_;
  MatRef head_;
};

void Rwkv4::time_mix(const Layer& L, int64_t T, float* state, Rwkv4Workspace& ws) const {
  const int64_t C = config_.n_embd;
  float* shift = state;
  float* aa = state + C;
  float* bb = state + 2 * C;
  float* pp = state + 3 * C;
  const float* xn = ws.xn.data();
  token_shift(xn, shift, L.mix_k, T, C, ws.xk.data());
  token_shift(xn, shift, L.mix_v, T, C, ws.xv.data());
  token_shift(xn, shift, L.mix_r, T, C, ws.xr.data());
  std::memcpy(shift, xn + (T - 1) * C, static_cast<size_t>(C) * sizeof(float));

  float *k = ws.k.data(), *v = ws.v.data(), *r = ws.r.data(), *y = ws.y.data();
  matmul(L.key, ws.xk.data(), T, k);
  matmul(L.value, ws.xv.data(), T, v);
  matmul(L.receptance, ws.xr.data(), T, r);

  // The WKV recurrence, per channel, token by token. Output: the past
  // (aa/bb scaled by exp(pp)) and the current token (weight exp(u + k)),
  // both rescaled by their larger exponent. Update: the past decays by exp(w)
  // and the current token joins with weight exp(k).
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = t * C + c;
      const float kt = k[i], vt = v[i];
      const float p_old = bb[c] == 0.0f ? kInitialPp : pp[c];
      float ww = L.first[c] + kt;
      float p = std::max(p_old, ww);
      float e1 = std::exp(p_old - p), e2 = std::exp(ww - p);
      const float wkv = (e1 * aa[c] + e2 * vt) / (e1 * bb[c] + e2);
      ww = p_old + L.decay[c];
      p = std::max(ww, kt);
      e1 = std::exp(ww - p);
      e2 = std::exp(kt - p);
      aa[c] = e1 * aa[c] + e2 * vt;
      bb[c] = e1 * bb[c] + e2;
      pp[c] = p;
      y[i] = sigmoid(r[i]) * wkv;
    }
  }
  float* out = ws.xk.data();  // xk is no longer needed
  matmul(L.output, y, T, out);
  float* x = ws.x.data();
  for (int64_t i = 0; i < T * C; ++i) x[i] += out[i];
}

void Rwkv4::channel_mix(const Layer& L, int64_t T, float* state, Rwkv4Workspace& ws) const {
  const int64_t C = config_.n_embd;
  const float* xn = ws.xn.data();
  token_shift(xn, state, L.ffn_mix_k, T, C, ws.xk.data());
  token_shift(xn, state, L.ffn_mix_r, T, C, ws.xr.data());
  std::memcpy(state, xn + (T - 1) * C, static_cast<size_t>(C) * sizeof(float));
  float* r = ws.r.data();
  matmul(L.ffn_receptance, ws.xr.data(), T, r);
  float* hidden = ws.ffn.data();
  matmul(L.ffn_key, ws.xk.data(), T, hidden);
  relu_square(hidden, T * config_.dim_ffn);
  float* kv = ws.y.data();
  matmul(L.ffn_value, hidden, T, kv);
  float* x = ws.x.data();
  for (int64_t i = 0; i < T * C; ++i) x[i] += sigmoid(r[i]) * kv[i];
}

void Rwkv4::forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                         Workspace& workspace) const {
  auto& ws = static_cast<Rwkv4Workspace&>(workspace);
  const int64_t T = static_cast<int64_t>(tokens.size()), C = config_.n_embd;
  ws.reserve(T, config_);
  float* x = ws.x.data();
  for (int64_t t = 0; t < T; ++t) {
    mat_row(emb_, tokens[static_cast<size_t>(t)], x + t * C);
    layer_norm(x + t * C, ln0_w_, ln0_b_, C, kLayerNormEps, x + t * C);
  }
  const size_t per_layer = static_cast<size_t>(5 * C);
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const Layer& L = layers_[static_cast<size_t>(l)];
    float* s = state.data().data() + static_cast<size_t>(l) * per_layer;
    for (int64_t t = 0; t < T; ++t) layer_norm(x + t * C, L.ln1_w, L.ln1_b, C, kLayerNormEps, ws.xn.data() + t * C);
    time_mix(L, T, s, ws);
    for (int64_t t = 0; t < T; ++t) layer_norm(x + t * C, L.ln2_w, L.ln2_b, C, kLayerNormEps, ws.xn.data() + t * C);
    channel_mix(L, T, s + 4 * C, ws);
  }
  if (which == Logits::None) return;
  const int64_t first = which == Logits::All ? 0 : T - 1;
  for (int64_t t = first; t < T; ++t)
    layer_norm(x + t * C, ln_out_w_, ln_out_b_, C, kLayerNormEps, ws.xn.data() + (t - first) * C);
  matmul(head_, ws.xn.data(), T - first, logits);
}

}  // namespace

std::unique_ptr<Model> load_rwkv4(std::shared_ptr<const TensorArchive> archive) {
  ModelConfig cfg;
  cfg.arch = Arch::V4;
  cfg.variant = "x040";
  cfg.file_format = archive->format;
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
  const TensorInfo& ffn_key = in.get("blocks.0.ffn.key.weight");
  if (ffn_key.shape.size() != 2) fail("{}: tensor 'blocks.0.ffn.key.weight' must be a matrix", archive->path);
  cfg.dim_ffn = ffn_key.shape[0];
  cfg.dtype = in.get("blocks.0.att.receptance.weight").dtype;

  std::vector<Layer> layers(static_cast<size_t>(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const std::string att = p + "att.", ffn = p + "ffn.";
    Layer& L = layers[static_cast<size_t>(l)];
    L.ln1_w = in.vector(p + "ln1.weight", C);
    L.ln1_b = in.vector(p + "ln1.bias", C);
    L.ln2_w = in.vector(p + "ln2.weight", C);
    L.ln2_b = in.vector(p + "ln2.bias", C);
    L.mix_k = in.vector(att + "time_mix_k", C);
    L.mix_v = in.vector(att + "time_mix_v", C);
    L.mix_r = in.vector(att + "time_mix_r", C);
    L.first = in.vector(att + "time_first", C);
    L.decay = in.vector(att + "time_decay", C);
    if (!rwkvcpp) {  // rwkv.cpp's converter already stored -exp(time_decay)
      float* w = storage.vectors.back().data();
      for (int64_t c = 0; c < C; ++c) w[c] = -std::exp(w[c]);
    }
    L.key = in.matrix(att + "key.weight", C, C);
    L.value = in.matrix(att + "value.weight", C, C);
    L.receptance = in.matrix(att + "receptance.weight", C, C);
    L.output = in.matrix(att + "output.weight", C, C);
    L.ffn_mix_k = in.vector(ffn + "time_mix_k", C);
    L.ffn_mix_r = in.vector(ffn + "time_mix_r", C);
    L.ffn_key = in.matrix(ffn + "key.weight", cfg.dim_ffn, C);
    L.ffn_value = in.matrix(ffn + "value.weight", C, cfg.dim_ffn);
    L.ffn_receptance = in.matrix(ffn + "receptance.weight", C, C);
  }
  const float* ln0_w = in.vector("blocks.0.ln0.weight", C);
  const float* ln0_b = in.vector("blocks.0.ln0.bias", C);
  const MatRef emb_ref = in.table("emb.weight", cfg.n_vocab, C);
  const float* ln_out_w = in.vector("ln_out.weight", C);
  const float* ln_out_b = in.vector("ln_out.bias", C);
  const MatRef head = in.matrix("head.weight", cfg.n_vocab, C);
  in.check_all_used();

  for (const TensorInfo& t : archive->tensors()) cfg.n_params += t.numel();
  return std::make_unique<Rwkv4>(std::move(cfg), std::move(storage), emb_ref, ln0_w, ln0_b, std::move(layers),
                                 ln_out_w, ln_out_b, head);
}

}  // namespace rwkv
