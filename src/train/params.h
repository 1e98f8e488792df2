// The parameters of an RWKV-7 model being trained: its hyper-parameters, the
// official state-dict names and shapes, and typed views into one flat buffer.
// Parameters, gradients and optimizer moments are mirrored flat buffers of
// the same layout, so optimizers and checkpoints walk one array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rwkv::train {

struct TrainConfig {
  int64_t n_layer = 0;
  int64_t n_embd = 0;      // C
  int64_t head_size = 64;  // N; n_head = C / N
  int64_t n_vocab = 0;     // V
  int64_t dim_ffn = 0;     // F (official x070: 4 C)
  // LoRA ranks of the decay (w), in-context learning rate (a), value residual (v) and gate (g).
  int64_t lora_w = 0, lora_a = 0, lora_v = 0, lora_g = 0;

  int64_t n_head() const { return head_size > 0 ? n_embd / head_size : 0; }
  // The official sizes (RWKV-LM RWKV-v7/train_temp/src/model.py): F = 4 C and
  // LoRA ranks max(32, round(f sqrt(C) / 32) 32) with f = 2.5 (w, a), 1.7 (v), 5 (g).
  static TrainConfig official(int64_t n_layer, int64_t n_embd, int64_t n_vocab, int64_t head_size = 64);
  // Fails with rwkv::Error naming the first impossible value.
  void validate() const;
  std::string describe() const;
  bool operator==(const TrainConfig&) const = default;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // official shape ([1,1,C] for per-channel vectors)
  size_t offset = 0;           // into the flat buffer, in elements
  size_t numel = 0;
  // Official optimizer groups (train_temp model.py configure_optimizers):
  // weight decay only for matrices named *.weight; att.w0 learns at 2x.
  bool decay = false;
  float lr_scale = 1.0f;
};

// Every tensor of the official RWKV-7 state dict, in its order, including
// layer 0's value-residual tensors (present in official checkpoints, unused).
class ParamLayout {
 public:
  explicit ParamLayout(const TrainConfig& config);
  const TrainConfig& config() const { return config_; }
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  size_t size() const { return size_; }
  const TensorSpec* find(std::string_view name) const;
  const TensorSpec& at(std::string_view name) const;  // fails naming the tensor
  size_t index(std::string_view name) const;          // position in tensors(); fails like at()

 private:
  TrainConfig config_;
  std::vector<TensorSpec> tensors_;
  size_t size_ = 0;
};

// Typed pointers into a flat buffer of ParamLayout's layout. Matrices keep the
// official orientation: Linear weights [out, in]; LoRA factors w1 [C, D], w2 [D, C].
template <typename T>
struct LayerView {
  T *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  T *x_r, *x_w, *x_k, *x_v, *x_a, *x_g;
  T *w1, *w2, *w0, *a1, *a2, *a0, *v1, *v2, *v0, *g1, *g2;
  T *k_k, *k_a, *r_k;
  T *receptance, *key, *value, *output;
  T *ln_x_w, *ln_x_b;
  T *ffn_x_k, *ffn_key, *ffn_value;
};

template <typename T>
struct ModelView {
  T* emb;
  T *ln0_w, *ln0_b;
  std::vector<LayerView<T>> layers;
  T *ln_out_w, *ln_out_b, *head;
};

// With `enabled` (one flag per tensor, layout order), disabled tensors get null pointers.
template <typename T>
ModelView<T> bind(const ParamLayout& layout, T* base, const std::vector<bool>* enabled = nullptr);

}  // namespace rwkv::train
