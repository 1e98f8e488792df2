#include "train/params.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace rwkv::train {

TrainConfig TrainConfig::official(int64_t n_layer, int64_t n_embd, int64_t n_vocab, int64_t head_size) {
  // Python's int(round(x)) rounds half to even, as nearbyint does by default.
  auto rank = [&](double factor) {
    return std::max<int64_t>(32, int64_t(std::nearbyint(factor * std::sqrt(double(n_embd)) / 32.0)) * 32);
  };
  TrainConfig c;
  c.n_layer = n_layer;
  c.n_embd = n_embd;
  c.head_size = head_size;
  c.n_vocab = n_vocab;
  c.dim_ffn = 4 * n_embd;
  c.lora_w = rank(2.5);
  c.lora_a = rank(2.5);
  c.lora_v = rank(1.7);
  c.lora_g = rank(5.0);
  return c;
}

void TrainConfig::validate() const {
  if (n_layer <= 0) fail("n_layer must be positive (got {})", n_layer);
  if (n_embd <= 0) fail("n_embd must be positive (got {})", n_embd);
  if (head_size <= 0) fail("head_size must be positive (got {})", head_size);
  if (n_embd % head_size != 0) fail("n_embd {} is not a multiple of head_size {}", n_embd, head_size);
  if (n_vocab <= 0) fail("vocabulary size must be positive (got {})", n_vocab);
  if (dim_ffn <= 0) fail("dim_ffn must be positive (got {})", dim_ffn);
  if (lora_w <= 0 || lora_a <= 0 || lora_v <= 0 || lora_g <= 0)
    fail("LoRA ranks must be positive (got w {}, a {}, v {}, g {})", lora_w, lora_a, lora_v, lora_g);
  // Every buffer index must fit comfortably in the int GEMM arguments.
  if (n_vocab > (int64_t(1) << 24) || n_embd > (int64_t(1) << 16) || dim_ffn > (int64_t(1) << 18))
    fail("model too large for the trainer (V {}, C {}, F {})", n_vocab, n_embd, dim_ffn);
}

std::string TrainConfig::describe() const {
  return fmt::format("L{} C{} head_size {} V{} F{} lora w{} a{} v{} g{}", n_layer, n_embd, head_size, n_vocab, dim_ffn,
                     lora_w, lora_a, lora_v, lora_g);
}

ParamLayout::ParamLayout(const TrainConfig& config) : config_(config) {
  config.validate();
  const int64_t C = config.n_embd, V = config.n_vocab, F = config.dim_ffn;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    TensorSpec s;
    s.name = std::move(name);
    s.shape = std::move(shape);
    s.numel = 1;
    int64_t dims = 0;
    for (int64_t d : s.shape) {
      s.numel *= size_t(d);
      if (d > 1) ++dims;
    }
    s.offset = size_;
    s.decay = dims >= 2 && s.name.find(".weight") != std::string::npos;
    s.lr_scale = s.name.find("att.w0") != std::string::npos ? 2.0f : 1.0f;
    size_ += s.numel;
    tensors_.push_back(std::move(s));
  };
  const std::vector<int64_t> vec = {1, 1, C};
  add("emb.weight", {V, C});
  for (int64_t l = 0; l < config.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    add(p + "ln1.weight", {C});
    add(p + "ln1.bias", {C});
    add(p + "ln2.weight", {C});
    add(p + "ln2.bias", {C});
    if (l == 0) {
      add(p + "ln0.weight", {C});
      add(p + "ln0.bias", {C});
    }
    const std::string a = p + "att.";
    for (const char* m : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) add(a + m, vec);
    add(a + "w1", {C, config.lora_w});
    add(a + "w2", {config.lora_w, C});
    add(a + "w0", vec);
    add(a + "a1", {C, config.lora_a});
    add(a + "a2", {config.lora_a, C});
    add(a + "a0", vec);
    add(a + "v1", {C, config.lora_v});
    add(a + "v2", {config.lora_v, C});
    add(a + "v0", vec);
    add(a + "g1", {C, config.lora_g});
    add(a + "g2", {config.lora_g, C});
    add(a + "k_k", vec);
    add(a + "k_a", vec);
    add(a + "r_k", {config.n_head(), config.head_size});
    for (const char* m : {"receptance", "key", "value", "output"}) add(a + m + ".weight", {C, C});
    add(a + "ln_x.weight", {C});
    add(a + "ln_x.bias", {C});
    add(p + "ffn.x_k", vec);
    add(p + "ffn.key.weight", {F, C});
    add(p + "ffn.value.weight", {C, F});
  }
  add("ln_out.weight", {C});
  add("ln_out.bias", {C});
  add("head.weight", {V, C});
}

const TensorSpec* ParamLayout::find(std::string_view name) const {
  for (const TensorSpec& s : tensors_)
    if (s.name == name) return &s;
  return nullptr;
}

const TensorSpec& ParamLayout::at(std::string_view name) const {
  const TensorSpec* s = find(name);
  if (s == nullptr) fail("no tensor '{}' in the RWKV-7 layout", name);
  return *s;
}

size_t ParamLayout::index(std::string_view name) const { return size_t(&at(name) - tensors_.data()); }

template <typename T>
ModelView<T> bind(const ParamLayout& layout, T* base, const std::vector<bool>* enabled) {
  auto ptr = [&](const std::string& name) -> T* {
    if (enabled && !(*enabled)[layout.index(name)]) return nullptr;
    return base + layout.at(name).offset;
  };
  ModelView<T> m;
  m.emb = ptr("emb.weight");
  m.ln0_w = ptr("blocks.0.ln0.weight");
  m.ln0_b = ptr("blocks.0.ln0.bias");
  m.ln_out_w = ptr("ln_out.weight");
  m.ln_out_b = ptr("ln_out.bias");
  m.head = ptr("head.weight");
  for (int64_t l = 0; l < layout.config().n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const std::string a = p + "att.";
    LayerView<T> L;
    L.ln1_w = ptr(p + "ln1.weight");
    L.ln1_b = ptr(p + "ln1.bias");
    L.ln2_w = ptr(p + "ln2.weight");
    L.ln2_b = ptr(p + "ln2.bias");
    L.x_r = ptr(a + "x_r");
    L.x_w = ptr(a + "x_w");
    L.x_k = ptr(a + "x_k");
    L.x_v = ptr(a + "x_v");
    L.x_a = ptr(a + "x_a");
    L.x_g = ptr(a + "x_g");
    L.w1 = ptr(a + "w1");
    L.w2 = ptr(a + "w2");
    L.w0 = ptr(a + "w0");
    L.a1 = ptr(a + "a1");
    L.a2 = ptr(a + "a2");
    L.a0 = ptr(a + "a0");
    L.v1 = ptr(a + "v1");
    L.v2 = ptr(a + "v2");
    L.v0 = ptr(a + "v0");
    L.g1 = ptr(a + "g1");
    L.g2 = ptr(a + "g2");
    L.k_k = ptr(a + "k_k");
    L.k_a = ptr(a + "k_a");
    L.r_k = ptr(a + "r_k");
    L.receptance = ptr(a + "receptance.weight");
    L.key = ptr(a + "key.weight");
    L.value = ptr(a + "value.weight");
    L.output = ptr(a + "output.weight");
    L.ln_x_w = ptr(a + "ln_x.weight");
    L.ln_x_b = ptr(a + "ln_x.bias");
    L.ffn_x_k = ptr(p + "ffn.x_k");
    L.ffn_key = ptr(p + "ffn.key.weight");
    L.ffn_value = ptr(p + "ffn.value.weight");
    m.layers.push_back(L);
  }
  return m;
}

template ModelView<float> bind(const ParamLayout&, float*, const std::vector<bool>*);
template ModelView<double> bind(const ParamLayout&, double*, const std::vector<bool>*);
template ModelView<const float> bind(const ParamLayout&, const float*, const std::vector<bool>*);
template ModelView<const double> bind(const ParamLayout&, const double*, const std::vector<bool>*);

}  // namespace rwkv::train
