#include "train/lora.h"

#include <cmath>
#include <random>

#include "core/error.h"
#include "formats/open.h"
#include "formats/pth_writer.h"
#include "train/checkpoint.h"
#include "train/gemm.h"

namespace rwkv::train {
namespace {

constexpr const char* kTargets[] = {"att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"};

}  // namespace

template <typename T>
Lora<T>::Lora(const ParamLayout& layout, int64_t rank, double alpha, std::span<const T> base)
    : layout_(layout), rank_(rank), alpha_(alpha) {
  if (rank <= 0) fail("LoRA rank must be positive (got {})", rank);
  if (!(alpha > 0)) fail("LoRA alpha must be positive (got {})", alpha);
  if (base.size() != layout.size()) fail("LoRA: base of {} floats for {}", base.size(), layout.size());
  size_t off = 0;
  for (int64_t l = 0; l < layout.config().n_layer; ++l)
    for (const char* target : kTargets) {
      const std::string prefix = "blocks." + std::to_string(l) + "." + target;
      const TensorSpec& s = layout.at(prefix + ".weight");
      Entry e{layout.index(s.name), prefix, s.shape[0], s.shape[1], off, off + size_t(rank * s.shape[1]), base_.size()};
      off = e.b + size_t(e.out * rank);
      base_.insert(base_.end(), base.begin() + ptrdiff_t(s.offset), base.begin() + ptrdiff_t(s.offset + s.numel));
      entries_.push_back(std::move(e));
    }
  adapters.assign(off, T(0));
}

template <typename T>
void Lora<T>::init(uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (const Entry& e : entries_) {
    std::uniform_real_distribution<double> u(-1.0 / std::sqrt(double(e.in)), 1.0 / std::sqrt(double(e.in)));
    for (int64_t i = 0; i < rank_ * e.in; ++i) adapters[e.a + size_t(i)] = T(u(rng));
    std::fill(adapters.begin() + ptrdiff_t(e.b), adapters.begin() + ptrdiff_t(e.b + size_t(e.out * rank_)), T(0));
  }
}

template <typename T>
void Lora<T>::merge_into(std::span<T> params) const {
  const T s = T(alpha_ / double(rank_));
  for (const Entry& e : entries_) {
    T* w = params.data() + layout_.tensors()[e.tensor].offset;
    std::copy(base_.begin() + ptrdiff_t(e.base), base_.begin() + ptrdiff_t(e.base + size_t(e.out * e.in)), w);
    // W += s B[out, r] A[r, in]
    gemm<T>(false, false, e.out, e.in, rank_, s, adapters.data() + e.b, rank_, adapters.data() + e.a, e.in, T(1), w,
            e.in);
  }
}

template <typename T>
void Lora<T>::gradients(std::span<const T> model_grads, std::span<T> d) const {
  const T s = T(alpha_ / double(rank_));
  for (const Entry& e : entries_) {
    const T* dw = model_grads.data() + layout_.tensors()[e.tensor].offset;
    // dA[r, in] = s B^T dW;  dB[out, r] = s dW A^T
    gemm<T>(true, false, rank_, e.in, e.out, s, adapters.data() + e.b, rank_, dw, e.in, T(0), d.data() + e.a, e.in);
    gemm<T>(false, true, e.out, rank_, e.in, s, dw, e.in, adapters.data() + e.a, e.in, T(0), d.data() + e.b, rank_);
  }
}

template <typename T>
std::vector<bool> Lora<T>::grad_mask() const {
  std::vector<bool> mask(layout_.tensors().size(), false);
  for (const Entry& e : entries_) mask[e.tensor] = true;
  return mask;
}

template <typename T>
std::shared_ptr<TensorArchive> Lora<T>::to_archive() const {
  auto archive = std::make_shared<TensorArchive>();
  archive->format = "pth";
  archive->path = "(lora)";
  auto add = [&](const std::string& name, std::vector<int64_t> shape, const T* src, size_t n) {
    TensorInfo t{name, DType::F32, std::move(shape), nullptr, n * sizeof(float)};
    auto* dst = reinterpret_cast<float*>(archive->own(t.nbytes));
    for (size_t i = 0; i < n; ++i) dst[i] = float(src[i]);
    t.data = reinterpret_cast<const std::byte*>(dst);
    archive->add(std::move(t));
  };
  for (const Entry& e : entries_) {
    add(e.prefix + ".lora_A", {rank_, e.in}, adapters.data() + e.a, size_t(rank_ * e.in));
    add(e.prefix + ".lora_B", {e.out, rank_}, adapters.data() + e.b, size_t(e.out * rank_));
  }
  const T alpha = T(alpha_);
  add("lora_alpha", {1}, &alpha, 1);
  return archive;
}

template class Lora<float>;
template class Lora<double>;

void merge_lora_files(const std::string& base_path, const std::string& adapter_path, const std::string& output,
                      DType dtype) {
  const auto base = open_tensor_archive(base_path);
  const TrainConfig cfg = infer_config(*base);
  const ParamLayout layout(cfg);
  std::vector<float> params(layout.size());
  load_params(*base, layout, params);
  const auto adapter = open_tensor_archive(adapter_path);
  const TensorInfo* alpha_t = adapter->find("lora_alpha");
  if (alpha_t == nullptr || alpha_t->numel() != 1)
    fail("{}: no 'lora_alpha' (not an rwkv LoRA adapter file)", adapter_path);
  float alpha = 0;
  convert_to_f32(alpha_t->dtype, alpha_t->data, &alpha, 1);
  size_t merged = 0;
  for (const TensorInfo& a : adapter->tensors()) {
    const std::string suffix = ".lora_A";
    if (a.name.size() <= suffix.size() || a.name.compare(a.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string prefix = a.name.substr(0, a.name.size() - suffix.size());
    const TensorInfo* b = adapter->find(prefix + ".lora_B");
    const TensorSpec* w = layout.find(prefix + ".weight");
    if (b == nullptr) fail("{}: '{}' has no matching '{}.lora_B'", adapter_path, a.name, prefix);
    if (w == nullptr)
      fail("{}: '{}' adapts '{}.weight', which {} does not have", adapter_path, a.name, prefix, base_path);
    const int64_t out = w->shape[0], in = w->shape[1];
    if (a.shape.size() != 2 || b->shape.size() != 2 || a.shape[1] != in || b->shape[0] != out ||
        b->shape[1] != a.shape[0])
      fail("{}: adapter '{}' does not fit {} [{}, {}] of {}", adapter_path, prefix, w->name, out, in, base_path);
    const int64_t r = a.shape[0];
    std::vector<float> A(size_t(r * in)), B(size_t(out * r));
    convert_to_f32(a.dtype, a.data, A.data(), A.size());
    convert_to_f32(b->dtype, b->data, B.data(), B.size());
    gemm<float>(false, false, out, in, r, alpha / float(r), B.data(), r, A.data(), in, 1.0f, params.data() + w->offset,
                in);
    ++merged;
  }
  if (merged == 0) fail("{}: no LoRA adapters (*.lora_A / *.lora_B) in the file", adapter_path);
  save_pth(output, layout, params, dtype);
}

}  // namespace rwkv::train
