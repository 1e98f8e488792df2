#include "train/checkpoint.h"

#include <algorithm>

#include "core/error.h"

namespace rwkv::train {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Shapes equal once leading 1s are dropped (torch keeps per-channel vectors as [1,1,C]).
bool same_shape(std::vector<int64_t> a, std::vector<int64_t> b) {
  auto squeeze = [](std::vector<int64_t>& s) {
    while (s.size() > 1 && s.front() == 1) s.erase(s.begin());
  };
  squeeze(a);
  squeeze(b);
  return a == b;
}

const TensorInfo& need(const TensorArchive& archive, const std::string& name, size_t dims) {
  const TensorInfo* t = archive.find(name);
  if (t == nullptr) fail("{}: tensor '{}' is missing (not an RWKV-7 checkpoint?)", archive.path, name);
  if (t->shape.size() != dims)
    fail("{}: tensor '{}' has shape {}, expected {} dimensions", archive.path, name, shape_string(t->shape), dims);
  return *t;
}

}  // namespace

TrainConfig infer_config(const TensorArchive& archive) {
  if (archive.format == "rwkv.cpp")
    fail("{}: an rwkv.cpp file; training needs an official-layout .pth checkpoint", archive.path);
  TrainConfig c;
  const TensorInfo& emb = need(archive, "emb.weight", 2);
  c.n_vocab = emb.shape[0];
  c.n_embd = emb.shape[1];
  while (archive.contains("blocks." + std::to_string(c.n_layer) + ".ln1.weight")) ++c.n_layer;
  if (c.n_layer == 0) fail("{}: no layers (missing 'blocks.0.ln1.weight')", archive.path);
  if (!archive.contains("blocks.0.att.r_k") || archive.contains("blocks.0.att.time_decay"))
    fail("{}: not an RWKV-7 checkpoint (no 'blocks.0.att.r_k')", archive.path);
  const TensorInfo& r_k = need(archive, "blocks.0.att.r_k", 2);
  c.head_size = r_k.shape[1];
  c.lora_w = need(archive, "blocks.0.att.w1", 2).shape[1];
  c.lora_a = need(archive, "blocks.0.att.a1", 2).shape[1];
  c.lora_g = need(archive, "blocks.0.att.g1", 2).shape[1];
  if (c.n_layer > 1) {
    c.lora_v = need(archive, "blocks.1.att.v1", 2).shape[1];
  } else if (archive.contains("blocks.0.att.v1")) {
    c.lora_v = need(archive, "blocks.0.att.v1", 2).shape[1];
  } else {
    c.lora_v = TrainConfig::official(1, c.n_embd, c.n_vocab).lora_v;
  }
  c.dim_ffn = need(archive, "blocks.0.ffn.key.weight", 2).shape[0];
  c.validate();
  if (r_k.shape[0] * r_k.shape[1] != c.n_embd)
    fail("{}: 'blocks.0.att.r_k' is {}, which does not split n_embd {} into heads", archive.path,
         shape_string(r_k.shape), c.n_embd);
  return c;
}

void load_params(const TensorArchive& archive, const ParamLayout& layout, std::span<float> params) {
  if (params.size() != layout.size()) fail("load_params: buffer of {} floats for {}", params.size(), layout.size());
  size_t used = 0;
  for (const TensorSpec& s : layout.tensors()) {
    float* out = params.data() + s.offset;
    const TensorInfo* t = archive.find(s.name);
    if (t == nullptr) {
      const bool optional = s.name == "blocks.0.att.v0" || s.name == "blocks.0.att.v1" || s.name == "blocks.0.att.v2";
      if (!optional) fail("{}: tensor '{}' is missing", archive.path, s.name);
      std::fill(out, out + s.numel, 0.0f);
      continue;
    }
    ++used;
    if (!same_shape(t->shape, s.shape))
      fail("{}: tensor '{}' has shape {}, expected {} (a checkpoint of another shape: {})", archive.path, s.name,
           shape_string(t->shape), shape_string(s.shape), layout.config().describe());
    convert_to_f32(t->dtype, t->data, out, s.numel);
  }
  if (used != archive.tensors().size()) {
    std::string extra;
    for (const TensorInfo& t : archive.tensors())
      if (layout.find(t.name) == nullptr) extra += (extra.empty() ? "" : ", ") + t.name;
    fail("{}: tensors the RWKV-7 layout does not have: {}", archive.path, extra);
  }
}

std::shared_ptr<TensorArchive> make_archive(const ParamLayout& layout, std::span<const float> params, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16)
    fail("checkpoints are saved as f32 or bf16, not {}", dtype_name(dtype));
  if (params.size() != layout.size()) fail("make_archive: buffer of {} floats for {}", params.size(), layout.size());
  auto archive = std::make_shared<TensorArchive>();
  archive->format = "pth";
  archive->path = "(trainer)";
  for (const TensorSpec& s : layout.tensors()) {
    TensorInfo t;
    t.name = s.name;
    t.dtype = dtype;
    t.shape = s.shape;
    t.nbytes = s.numel * dtype_size(dtype);
    std::byte* data = archive->own(t.nbytes);
    const float* src = params.data() + s.offset;
    if (dtype == DType::F32) {
      std::copy(src, src + s.numel, reinterpret_cast<float*>(data));
    } else {
      auto* dst = reinterpret_cast<uint16_t*>(data);
      for (size_t i = 0; i < s.numel; ++i) dst[i] = f32_to_bf16(src[i]);
    }
    t.data = data;
    archive->add(std::move(t));
  }
  return archive;
}

}  // namespace rwkv::train
