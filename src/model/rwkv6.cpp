#include "model/rwkv6.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/kernels.h"
#include "model/wkv_diagonal.h"
#include "model/weights.h"

namespace rwkv {
namespace {

constexpr float kLayerNormEps = 1e-5f;
constexpr float kGroupNormEps = 64e-5f;  // the official ln_x epsilon (rwkv.cpp agrees for v6)
constexpr int kMixes = 5;                // w, k, v, r, g: the order of time_maa_w1/w2's parts

struct Layer {
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  const float* maa_x;                       // mix of the LoRA's input
  std::array<const float*, kMixes> maa;     // base mixes, order w k v r g
  MatRef maa_w1;                            // [5 * Dm, C]
  std::array<MatRef, kMixes> maa_w2;        // each [C, Dm]
  const float* decay;                       // time_decay [C], before the LoRA and exp(-exp(.))
  MatRef decay_w1, decay_w2;                // [Dw, C], [C, Dw]
  const float* first;                       // u = time_faaaa [C]
  MatRef receptance, key, value, gate, output;
  const float *ln_x_w, *ln_x_b;
  const float *ffn_maa_k, *ffn_maa_r;
  MatRef ffn_key, ffn_value, ffn_receptance;
};

struct Rwkv6Workspace : Workspace {
  int64_t capacity = 0;
  std::vector<float> x, xn, dx, lora_in, mixed, r, k, v, g, w, y, hidden, part, ffn;

  void reserve(int64_t t, const ModelConfig& c) {
    if (t <= capacity) return;
    capacity = t;
    const size_t tc = static_cast<size_t>(t * c.n_embd);
    for (auto* b : {&x, &xn, &dx, &lora_in, &r, &k, &v, &g, &w, &y}) b->assign(tc, 0.0f);
    mixed.assign(kMixes * tc, 0.0f);
    hidden.assign(static_cast<size_t>(t * std::max(kMixes * c.lora_mix, c.lora_w)), 0.0f);
    part.assign(static_cast<size_t>(t * c.lora_mix), 0.0f);
    ffn.assign(static_cast<size_t>(t * c.dim_ffn), 0.0f);
  }
};

// dx[t] = x[t-1] - x[t], with x[-1] = prev: RWKV-6 writes every token shift
// as x + dx * mix.
void shift_delta(const float* x, const float* prev, int64_t T, int64_t C, float* dx) {
  for (int64_t t = 0; t < T; ++t) {
    const float* before = t == 0 ? prev : x + (t - 1) * C;
    for (int64_t c = 0; c < C; ++c) dx[t * C + c] = before[c] - x[t * C + c];
  }
}

class Rwkv6 final : public Model {
 public:
  Rwkv6(ModelConfig config, WeightStorage storage, MatRef emb, const float* ln0_w, const float* ln0_b,
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

  // Per layer: att_x [C] (previous ln1 output), the wkv state [H, N, N] as
  // S[h][i][j] with i the key and j the value channel (the official
  // orientation), ffn_x [C]. Same layout as RWKV-5.
  size_t state_size() const override { return static_cast<size_t>(config_.n_layer) * layer_state_size(); }
  std::unique_ptr<Workspace> new_workspace() const override { return std::make_unique<Rwkv6Workspace>(); }

 protected:
  void forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                    Workspace& workspace) const override;

 private:
  size_t layer_state_size() const {
    return static_cast<size_t>(2 * config_.n_embd + config_.n_head * config_.head_size * config_.head_size);
  }
  void time_mix(const Layer& L, int64_t T, float* state, Rwkv6Workspace& ws) const;
  void channel_mix(const Layer& L, int64_t T, float* state, Rwkv6Workspace& ws) const;

  WeightStorage storage_;
  MatRef emb_;
  const float *ln0_w_, *ln0_b_;
  std::vector<Layer> layers_;
  const float *ln_out_w_, *ln_out_b_;
  MatRef head_;
};

void Rwkv6::time_mix(const Layer& L, int64_t T, float* state, Rwkv6Workspace& ws) const {
  const int64_t C = config_.n_embd, H = config_.n_head, N = config_.head_size;
  const int64_t Dm = config_.lora_mix, Dw = config_.lora_w;
  const size_t tc = static_cast<size_t>(T * C);
  float* shift = state;
  float* wkv = state + C;
  const float* xn = ws.xn.data();
  float* dx = ws.dx.data();
  shift_delta(xn, shift, T, C, dx);
  std::memcpy(shift, xn + (T - 1) * C, static_cast<size_t>(C) * sizeof(float));

  // Data-dependent mixes: m = tanh((x + dx * maa_x) W1), split in five parts
  // of Dm, part j through W2[j]; then x_j = x + dx * (maa_j + m_j).
  float* lora_in = ws.lora_in.data();
  for (size_t i = 0; i < tc; ++i) lora_in[i] = xn[i] + dx[i] * L.maa_x[i % static_cast<size_t>(C)];
  float* hidden = ws.hidden.data();
  matmul(L.maa_w1, lora_in, T, hidden);
  for (int64_t i = 0; i < T * kMixes * Dm; ++i) hidden[i] = std::tanh(hidden[i]);
  float* part = ws.part.data();
  for (int j = 0; j < kMixes; ++j) {
    for (int64_t t = 0; t < T; ++t)
      std::memcpy(part + t * Dm, hidden + (t * kMixes + j) * Dm, static_cast<size_t>(Dm) * sizeof(float));
    float* xj = ws.mixed.data() + static_cast<size_t>(j) * tc;
    matmul(L.maa_w2[static_cast<size_t>(j)], part, T, xj);
    const float* base = L.maa[static_cast<size_t>(j)];
    for (size_t i = 0; i < tc; ++i) xj[i] = xn[i] + dx[i] * (base[i % static_cast<size_t>(C)] + xj[i]);
  }
  const float* xw = ws.mixed.data();
  const float* xk = xw + tc;
  const float* xv = xw + 2 * tc;
  const float* xr = xw + 3 * tc;
  const float* xg = xw + 4 * tc;

  float *r = ws.r.data(), *k = ws.k.data(), *v = ws.v.data(), *g = ws.g.data(), *w = ws.w.data();
  matmul(L.receptance, xr, T, r);
  matmul(L.key, xk, T, k);
  matmul(L.value, xv, T, v);
  matmul(L.gate, xg, T, g);
  for (size_t i = 0; i < tc; ++i) g[i] *= sigmoid(g[i]);  // silu

  // Per-token decay: w = exp(-exp(time_decay + tanh(xw Dw1) Dw2)).
  matmul(L.decay_w1, xw, T, hidden);
  for (int64_t i = 0; i < T * Dw; ++i) hidden[i] = std::tanh(hidden[i]);
  matmul(L.decay_w2, hidden, T, w);
  for (size_t i = 0; i < tc; ++i) w[i] = std::exp(-std::exp(L.decay[i % static_cast<size_t>(C)] + w[i]));

  // Per token and head, with S[i][j] (i: key, j: value):
  //   y_j = sum_i r_i (u_i k_i v_j + S[i][j]),   S[i][j] = w_i S[i][j] + k_i v_j
  float* y = ws.y.data();
  for (int64_t h = 0; h < H; ++h)
    wkv_diagonal(r + h * N, k + h * N, v + h * N, w + h * N, C, L.first + h * N, T, C, N, wkv + h * N * N,
                 y + h * N);

  for (int64_t t = 0; t < T; ++t) {
    float* yt = y + t * C;
    group_norm(yt, L.ln_x_w, L.ln_x_b, H, N, kGroupNormEps, yt);
    for (int64_t c = 0; c < C; ++c) yt[c] *= g[t * C + c];
  }
  float* out = ws.r.data();  // r is no longer needed
  matmul(L.output, y, T, out);
  float* x = ws.x.data();
  for (size_t i = 0; i < tc; ++i) x[i] += out[i];
}

void Rwkv6::channel_mix(const Layer& L, int64_t T, float* state, Rwkv6Workspace& ws) const {
  const int64_t C = config_.n_embd;
  const size_t tc = static_cast<size_t>(T * C);
  const float* xn = ws.xn.data();
  float* dx = ws.dx.data();
  shift_delta(xn, state, T, C, dx);
  std::memcpy(state, xn + (T - 1) * C, static_cast<size_t>(C) * sizeof(float));
  float *xk = ws.mixed.data(), *xr = ws.mixed.data() + tc;
  for (size_t i = 0; i < tc; ++i) {
    const size_t c = i % static_cast<size_t>(C);
    xk[i] = xn[i] + dx[i] * L.ffn_maa_k[c];
    xr[i] = xn[i] + dx[i] * L.ffn_maa_r[c];
  }
  float* r = ws.r.data();
  matmul(L.ffn_receptance, xr, T, r);
  float* hidden = ws.ffn.data();
  matmul(L.ffn_key, xk, T, hidden);
  relu_square(hidden, T * config_.dim_ffn);
  float* kv = ws.y.data();
  matmul(L.ffn_value, hidden, T, kv);
  float* x = ws.x.data();
  for (size_t i = 0; i < tc; ++i) x[i] += sigmoid(r[i]) * kv[i];
}

void Rwkv6::forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                         Workspace& workspace) const {
  auto& ws = static_cast<Rwkv6Workspace&>(workspace);
  const int64_t T = static_cast<int64_t>(tokens.size()), C = config_.n_embd;
  ws.reserve(T, config_);
  float* x = ws.x.data();
  for (int64_t t = 0; t < T; ++t) {
    mat_row(emb_, tokens[static_cast<size_t>(t)], x + t * C);
    layer_norm(x + t * C, ln0_w_, ln0_b_, C, kLayerNormEps, x + t * C);
  }
  const size_t per_layer = layer_state_size();
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const Layer& L = layers_[static_cast<size_t>(l)];
    float* s = state.data().data() + static_cast<size_t>(l) * per_layer;
    for (int64_t t = 0; t < T; ++t) layer_norm(x + t * C, L.ln1_w, L.ln1_b, C, kLayerNormEps, ws.xn.data() + t * C);
    time_mix(L, T, s, ws);
    for (int64_t t = 0; t < T; ++t) layer_norm(x + t * C, L.ln2_w, L.ln2_b, C, kLayerNormEps, ws.xn.data() + t * C);
    channel_mix(L, T, s + per_layer - static_cast<size_t>(C), ws);
  }
  if (which == Logits::None) return;
  const int64_t first = which == Logits::All ? 0 : T - 1;
  for (int64_t t = first; t < T; ++t)
    layer_norm(x + t * C, ln_out_w_, ln_out_b_, C, kLayerNormEps, ws.xn.data() + (t - first) * C);
  matmul(head_, ws.xn.data(), T - first, logits);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::unique_ptr<Model> load_rwkv6(std::shared_ptr<const TensorArchive> archive) {
  ModelConfig cfg;
  cfg.arch = Arch::V6;
  cfg.variant = "x060";
  cfg.file_format = archive->format;
  // rwkv.cpp's converter transposes time_maa_w1 and time_decay_w1/w2 to
  // [out, in], swaps the last two dimensions of time_maa_w2 (to [5, C, Dm])
  // and reshapes time_decay and time_faaaa to [H, N, 1].
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

  // Heads from time_faaaa [H, N] (the official rule), LoRA ranks from W1.
  const TensorInfo& faaaa = in.get("blocks.0.att.time_faaaa");
  if (faaaa.shape.size() < 2 || faaaa.shape[0] <= 0 || faaaa.shape[1] <= 0 || faaaa.shape[0] * faaaa.shape[1] != C)
    fail("{}: tensor 'blocks.0.att.time_faaaa' has shape {}, expected [n_head, head_size] with n_head * head_size = {}",
         archive->path, shape_text(faaaa.shape), C);
  cfg.n_head = faaaa.shape[0];
  cfg.head_size = faaaa.shape[1];
  const int64_t H = cfg.n_head, N = cfg.head_size;
  auto rank_of = [&](const std::string& name, int64_t parts) -> int64_t {
    const TensorInfo& t = in.get(name);
    if (t.shape.size() != 2) fail("{}: tensor '{}' has shape {}, expected a matrix", archive->path, name, shape_text(t.shape));
    const int64_t d = rwkvcpp ? t.shape[0] : t.shape[1];
    if (d <= 0 || d % parts != 0)
      fail("{}: tensor '{}' has shape {}: its LoRA dimension must be a positive multiple of {}", archive->path, name,
           shape_text(t.shape), parts);
    return d / parts;
  };
  cfg.lora_mix = rank_of("blocks.0.att.time_maa_w1", kMixes);
  cfg.lora_w = rank_of("blocks.0.att.time_decay_w1", 1);
  const int64_t Dm = cfg.lora_mix, Dw = cfg.lora_w;
  const TensorInfo& ffn_key = in.get("blocks.0.ffn.key.weight");
  if (ffn_key.shape.size() != 2) fail("{}: tensor 'blocks.0.ffn.key.weight' must be a matrix", archive->path);
  cfg.dim_ffn = ffn_key.shape[0];
  cfg.dtype = in.get("blocks.0.att.receptance.weight").dtype;

  // An official [out, in] LoRA weight is stored [in, out]; rwkv.cpp's as [out, in].
  auto lora = [&](const std::string& name, int64_t out, int64_t inner) {
    return rwkvcpp ? in.matrix(name, out, inner) : in.matrix_transposed(name, out, inner);
  };
  // time_maa_w2: five [C, Dm] matrices, from official [5, Dm, C] (each part
  // transposed into storage) or rwkv.cpp's [5, C, Dm] (used in place).
  auto mix_w2 = [&](const std::string& name) {
    const TensorInfo& t = in.get(name);
    const std::vector<int64_t> want = rwkvcpp ? std::vector<int64_t>{kMixes, C, Dm} : std::vector<int64_t>{kMixes, Dm, C};
    if (t.shape != want)
      fail("{}: tensor '{}' has shape {}, expected {}", archive->path, name, shape_text(t.shape), shape_text(want));
    const size_t elem = dtype_size(t.dtype), part = static_cast<size_t>(C * Dm) * elem;
    std::array<MatRef, kMixes> parts;
    for (size_t j = 0; j < kMixes; ++j) {
      const std::byte* src = t.data + j * part;
      if (rwkvcpp) {
        parts[j] = MatRef{t.dtype, C, Dm, src};
        continue;
      }
      std::vector<std::byte>& dst = storage.matrices.emplace_back(part);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t d = 0; d < Dm; ++d)
          std::memcpy(dst.data() + static_cast<size_t>(c * Dm + d) * elem, src + static_cast<size_t>(d * C + c) * elem,
                      elem);
      parts[j] = MatRef{t.dtype, C, Dm, dst.data()};
    }
    return parts;
  };
  auto per_channel = [&](const std::string& name) {
    return rwkvcpp ? in.flat(name, {H, N, 1}) : in.flat(name, {H, N});
  };

  std::vector<Layer> layers(static_cast<size_t>(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const std::string att = p + "att.", ffn = p + "ffn.";
    Layer& L = layers[static_cast<size_t>(l)];
    L.ln1_w = in.vector(p + "ln1.weight", C);
    L.ln1_b = in.vector(p + "ln1.bias", C);
    L.ln2_w = in.vector(p + "ln2.weight", C);
    L.ln2_b = in.vector(p + "ln2.bias", C);
    L.maa_x = in.vector(att + "time_maa_x", C);
    const char* mix_names[kMixes] = {"w", "k", "v", "r", "g"};
    for (size_t j = 0; j < kMixes; ++j) L.maa[j] = in.vector(att + "time_maa_" + mix_names[j], C);
    L.maa_w1 = lora(att + "time_maa_w1", kMixes * Dm, C);
    L.maa_w2 = mix_w2(att + "time_maa_w2");
    L.decay = rwkvcpp ? per_channel(att + "time_decay") : in.vector(att + "time_decay", C);
    L.decay_w1 = lora(att + "time_decay_w1", Dw, C);
    L.decay_w2 = lora(att + "time_decay_w2", C, Dw);
    L.first = per_channel(att + "time_faaaa");
    L.receptance = in.matrix(att + "receptance.weight", C, C);
    L.key = in.matrix(att + "key.weight", C, C);
    L.value = in.matrix(att + "value.weight", C, C);
    L.gate = in.matrix(att + "gate.weight", C, C);
    L.output = in.matrix(att + "output.weight", C, C);
    L.ln_x_w = in.vector(att + "ln_x.weight", C);
    L.ln_x_b = in.vector(att + "ln_x.bias", C);
    L.ffn_maa_k = in.vector(ffn + "time_maa_k", C);
    L.ffn_maa_r = in.vector(ffn + "time_maa_r", C);
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
  return std::make_unique<Rwkv6>(std::move(cfg), std::move(storage), emb_ref, ln0_w, ln0_b, std::move(layers),
                                 ln_out_w, ln_out_b, head);
}

}  // namespace rwkv
