#include "model/rwkv5.h"

#include <algorithm>
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

// What tells the 5.x versions apart. Everything else is shared.
struct Variant {
  const char* name;
  bool gate;         // 5.1+: output gated by silu(gate @ xg), with its own token-shift mix
  bool per_channel;  // 5.2: decay and bonus per channel [H, N]; before: one per head [H]
};

Variant variant_of(Arch arch) {
  switch (arch) {
    case Arch::V5_0: return {"x050", false, false};
    case Arch::V5_1: return {"x051", true, false};
    case Arch::V5_2: return {"x052", true, true};
    default: fail("internal error: load_rwkv5 called for RWKV-{}", arch_name(arch));
  }
}

struct Layer {
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  const float *mix_k, *mix_v, *mix_r, *mix_g;  // mix_g null without a gate
  // Per channel [C] whatever the version (per-head values are repeated):
  const float* decay;  // w = exp(-exp(time_decay)), in (0, 1)
  const float* first;  // u, the bonus of the current token
  MatRef receptance, key, value, gate, output;
  const float *ln_x_w, *ln_x_b;
  const float *ffn_mix_k, *ffn_mix_r;
  MatRef ffn_key, ffn_value, ffn_receptance;
};

struct Rwkv5Workspace : Workspace {
  int64_t capacity = 0;
  std::vector<float> x, xn, xk, xv, xr, xg, r, k, v, g, y, ffn;

  void reserve(int64_t t, const ModelConfig& c) {
    if (t <= capacity) return;
    capacity = t;
    const size_t tc = static_cast<size_t>(t * c.n_embd);
    for (auto* b : {&x, &xn, &xk, &xv, &xr, &xg, &r, &k, &v, &g, &y}) b->assign(tc, 0.0f);
    ffn.assign(static_cast<size_t>(t * c.dim_ffn), 0.0f);
  }
};

// out[t] = x[t] * mix + x[t-1] * (1 - mix), with x[-1] = prev.
void token_shift(const float* x, const float* prev, const float* mix, int64_t T, int64_t C, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const float* cur = x + t * C;
    const float* before = t == 0 ? prev : x + (t - 1) * C;
    for (int64_t c = 0; c < C; ++c) out[t * C + c] = cur[c] * mix[c] + before[c] * (1.0f - mix[c]);
  }
}

class Rwkv5 final : public Model {
 public:
  Rwkv5(ModelConfig config, Variant variant, float gn_eps, WeightStorage storage, MatRef emb, const float* ln0_w,
        const float* ln0_b, std::vector<Layer> layers, const float* ln_out_w, const float* ln_out_b, MatRef head)
      : Model(std::move(config)),
        variant_(variant),
        gn_eps_(gn_eps),
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
  // orientation, so rows are contiguous in the value index), ffn_x [C].
  size_t state_size() const override { return static_cast<size_t>(config_.n_layer) * layer_state_size(); }
  std::unique_ptr<Workspace> new_workspace() const override { return std::make_unique<Rwkv5Workspace>(); }

 protected:
  void forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                    Workspace& workspace) const override;

 private:
  size_t layer_state_size() const {
    return static_cast<size_t>(2 * config_.n_embd + config_.n_head * config_.head_size * config_.head_size);
  }
  void time_mix(const Layer& L, int64_t T, float* state, Rwkv5Workspace& ws) const;
  void channel_mix(const Layer& L, int64_t T, float* state, Rwkv5Workspace& ws) const;

  Variant variant_;
  float gn_eps_;
  WeightStorage storage_;
  MatRef emb_;
  const float *ln0_w_, *ln0_b_;
  std::vector<Layer> layers_;
  const float *ln_out_w_, *ln_out_b_;
  MatRef head_;
};

void Rwkv5::time_mix(const Layer& L, int64_t T, float* state, Rwkv5Workspace& ws) const {
  const int64_t C = config_.n_embd, H = config_.n_head, N = config_.head_size;
  float* shift = state;
  float* wkv = state + C;
  const float* xn = ws.xn.data();
  token_shift(xn, shift, L.mix_k, T, C, ws.xk.data());
  token_shift(xn, shift, L.mix_v, T, C, ws.xv.data());
  token_shift(xn, shift, L.mix_r, T, C, ws.xr.data());
  if (variant_.gate) token_shift(xn, shift, L.mix_g, T, C, ws.xg.data());
  std::memcpy(shift, xn + (T - 1) * C, static_cast<size_t>(C) * sizeof(float));

  float *r = ws.r.data(), *k = ws.k.data(), *v = ws.v.data(), *g = ws.g.data(), *y = ws.y.data();
  matmul(L.receptance, ws.xr.data(), T, r);
  matmul(L.key, ws.xk.data(), T, k);
  matmul(L.value, ws.xv.data(), T, v);
  if (variant_.gate) {
    matmul(L.gate, ws.xg.data(), T, g);
    for (int64_t i = 0; i < T * C; ++i) g[i] *= sigmoid(g[i]);  // silu
  }

  // Per token and head, with S[i][j] (i: key, j: value):
  //   y_j = sum_i r_i (u_i k_i v_j + S[i][j]),   S[i][j] = w_i S[i][j] + k_i v_j
  for (int64_t h = 0; h < H; ++h)
    wkv_diagonal(r + h * N, k + h * N, v + h * N, L.decay + h * N, 0, L.first + h * N, T, C, N, wkv + h * N * N,
                 y + h * N);

  for (int64_t t = 0; t < T; ++t) {
    float* yt = y + t * C;
    group_norm(yt, L.ln_x_w, L.ln_x_b, H, N, gn_eps_, yt);
    if (variant_.gate)
      for (int64_t c = 0; c < C; ++c) yt[c] *= g[t * C + c];
  }
  float* out = ws.r.data();  // r is no longer needed
  matmul(L.output, y, T, out);
  float* x = ws.x.data();
  for (int64_t i = 0; i < T * C; ++i) x[i] += out[i];
}

void Rwkv5::channel_mix(const Layer& L, int64_t T, float* state, Rwkv5Workspace& ws) const {
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

void Rwkv5::forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                         Workspace& workspace) const {
  auto& ws = static_cast<Rwkv5Workspace&>(workspace);
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

}  // namespace

std::unique_ptr<Model> load_rwkv5(std::shared_ptr<const TensorArchive> archive, Arch arch, float group_norm_eps) {
  const Variant variant = variant_of(arch);
  if (!(group_norm_eps > 0.0f)) fail("RWKV-5 group norm epsilon must be positive, got {}", group_norm_eps);
  ModelConfig cfg;
  cfg.arch = arch;
  cfg.variant = variant.name;
  cfg.file_format = archive->format;
  // rwkv.cpp's converter stores the decay as exp(-exp(time_decay)) and
  // time_first as exp(time_first), reshaped to [H, 1, 1] (5.0), [H, 1] (5.1)
  // or [H, N, 1] (5.2); time_faaaa is kept as it is, reshaped to [H, N, 1].
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

  // The head count is time_decay's first dimension, as in the official code.
  const TensorInfo& decay0 = in.get("blocks.0.att.time_decay");
  if (decay0.shape.empty() || decay0.shape[0] <= 0 || C % decay0.shape[0] != 0)
    fail("{}: tensor 'blocks.0.att.time_decay' must start with the head count, a divisor of n_embd = {}",
         archive->path, C);
  cfg.n_head = decay0.shape[0];
  cfg.head_size = C / cfg.n_head;
  const int64_t H = cfg.n_head, N = cfg.head_size;
  const TensorInfo& ffn_key = in.get("blocks.0.ffn.key.weight");
  if (ffn_key.shape.size() != 2) fail("{}: tensor 'blocks.0.ffn.key.weight' must be a matrix", archive->path);
  cfg.dim_ffn = ffn_key.shape[0];
  cfg.dtype = in.get("blocks.0.att.receptance.weight").dtype;

  // A decay or bonus tensor as a per-channel [C] vector in storage (per-head
  // values repeated over the head), writable so that transforms can follow.
  auto per_channel = [&](const std::string& name) -> float* {
    if (variant.per_channel) {
      const std::vector<int64_t> shape = rwkvcpp ? std::vector<int64_t>{H, N, 1} : std::vector<int64_t>{H, N};
      in.flat(name, shape);
      return storage.vectors.back().data();
    }
    const float* heads = in.vector(name, H);
    std::vector<float>& out = storage.vectors.emplace_back(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) out[static_cast<size_t>(c)] = heads[c / N];
    return out.data();
  };

  // time_faaaa holds the bonus itself, time_first its logarithm. As in the
  // official loader, any time_faaaa in the file means every layer has one.
  bool real_first = false;
  for (const TensorInfo& t : archive->tensors()) real_first |= t.name.ends_with(".att.time_faaaa");

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
    L.mix_g = variant.gate ? in.vector(att + "time_mix_g", C) : nullptr;

    float* decay = per_channel(att + "time_decay");
    if (!rwkvcpp)
      for (int64_t c = 0; c < C; ++c) decay[c] = std::exp(-std::exp(decay[c]));
    L.decay = decay;
    float* first = per_channel(att + (real_first ? "time_faaaa" : "time_first"));
    if (!real_first && !rwkvcpp)
      for (int64_t c = 0; c < C; ++c) first[c] = std::exp(first[c]);
    L.first = first;

    L.receptance = in.matrix(att + "receptance.weight", C, C);
    L.key = in.matrix(att + "key.weight", C, C);
    L.value = in.matrix(att + "value.weight", C, C);
    if (variant.gate) L.gate = in.matrix(att + "gate.weight", C, C);
    L.output = in.matrix(att + "output.weight", C, C);
    L.ln_x_w = in.vector(att + "ln_x.weight", C);
    L.ln_x_b = in.vector(att + "ln_x.bias", C);
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
  return std::make_unique<Rwkv5>(std::move(cfg), variant, group_norm_eps, std::move(storage), emb_ref, ln0_w, ln0_b,
                                 std::move(layers), ln_out_w, ln_out_b, head);
}

}  // namespace rwkv
