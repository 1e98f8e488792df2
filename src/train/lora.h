// LoRA adapters on RWKV-7's projection matrices (the att receptance, key,
// value, output and ffn key, value Linears, as RWKV-PEFT adapts them):
//   W = W0 + (alpha / r) B A,   A [r, in], B [out, r],
// A initialised as torch's Linear (uniform +-1/sqrt(in)), B zero, so training
// starts from the base model. The base weights stay frozen.
//
// Training uses the merged weights: merge_into() writes W into the model's
// parameters before each step, the model's backward gives dW for the adapted
// matrices (grad_mask()), and gradients() turns dW into dA = s B^T dW and
// dB = s dW A^T (s = alpha / r).
//
// Adapter files are .pth state dicts with RWKV-PEFT's names,
// "blocks.L.att.receptance.lora_A" / ".lora_B", plus "lora_alpha" [1].
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/tensor_archive.h"
#include "train/params.h"

namespace rwkv::train {

template <typename T>
class Lora {
 public:
  // base: the model's parameters, of which the adapted matrices are copied.
  Lora(const ParamLayout& layout, int64_t rank, double alpha, std::span<const T> base);

  int64_t rank() const { return rank_; }
  double alpha() const { return alpha_; }
  // Every adapter, [A_0, B_0, A_1, B_1, ...] in layout order of the adapted matrices.
  std::vector<T> adapters;

  void init(uint64_t seed);
  void merge_into(std::span<T> params) const;
  // d_adapters = the adapters' gradient given the model's gradient (overwritten).
  void gradients(std::span<const T> model_grads, std::span<T> d_adapters) const;
  // One flag per model tensor: true for the adapted matrices.
  std::vector<bool> grad_mask() const;

  // The adapters as an archive of f32 tensors (RWKV-PEFT names + lora_alpha).
  std::shared_ptr<TensorArchive> to_archive() const;

 private:
  struct Entry {
    size_t tensor;       // index in the layout
    std::string prefix;  // "blocks.0.att.receptance"
    int64_t out, in;
    size_t a, b;  // offsets into adapters
    size_t base;  // offset into base_
  };
  const ParamLayout& layout_;
  int64_t rank_;
  double alpha_;
  std::vector<Entry> entries_;
  std::vector<T> base_;
};

extern template class Lora<float>;
extern template class Lora<double>;

// rwkv lora-merge: writes base + adapters (W0 + alpha / r B A, computed in
// float32) to `output` in the base checkpoint's layout, as f32 or bf16.
// Fails for adapters that do not fit the base (names or shapes).
void merge_lora_files(const std::string& base, const std::string& adapter, const std::string& output, DType dtype);

}  // namespace rwkv::train
