#include "model/loader.h"

#include "core/error.h"
#include "formats/open.h"
#include "model/layouts.h"
#include "model/rwkv4.h"
#include "model/rwkv5.h"
#include "model/rwkv6.h"
#include "model/rwkv7.h"

namespace rwkv {

Arch detect_arch(const TensorArchive& a) {
  if (a.contains("blocks.0.att.k_k") || a.contains("blocks.0.att.x_rwkvag")) return Arch::V7;
  if (!a.contains("emb.weight")) fail("{}: not an RWKV model (no 'emb.weight' tensor)", a.path);
  // The official rules (rwkv pip package, RWKV.__init__), over every tensor:
  // 'time_maa' means 6; otherwise 'ln_x' means 5, 'gate.weight' at least
  // 5.1, an att.time_decay whose second dimension exceeds 1 means 5.2;
  // anything else is 4. They hold for rwkv.cpp's converted files too.
  bool maa = false, ln_x = false, gate = false, channel_decay = false, blocks = false;
  for (const TensorInfo& t : a.tensors()) {
    const std::string_view n = t.name;
    maa |= n.find("time_maa") != n.npos;
    ln_x |= n.find("ln_x") != n.npos;
    gate |= n.find("gate.weight") != n.npos;
    channel_decay |= n.ends_with("att.time_decay") && t.shape.size() >= 2 && t.shape[1] > 1;
    blocks |= n.starts_with("blocks.");
  }
  if (maa) return Arch::V6;
  if (ln_x || gate) return channel_decay ? Arch::V5_2 : gate ? Arch::V5_1 : Arch::V5_0;
  if (blocks) return Arch::V4;
  fail("{}: unknown RWKV layout: no 'blocks.N.*' tensors", a.path);
}

V7Variant detect_v7_variant(const TensorArchive& a) {
  // RWKV-7b (rwkv7b-g1b files): DeepEmbed plus a softmax attention over the
  // whole context (blocks.N.qkv.*, with a per-token KV cache in the state).
  std::string qkv;
  int listed = 0;
  for (const TensorInfo& t : a.tensors()) {
    if (t.name.starts_with("blocks.") && t.name.find(".qkv.") != std::string::npos && listed++ < 4)
      qkv += (qkv.empty() ? "'" : ", '") + t.name + "'";
  }
  if (!qkv.empty())
    fail("{}: an RWKV-7b model (DeepEmbed attention: tensors {}{}), which is not supported: its attention over the "
         "whole context needs a KV cache; RWKV-7 and RWKV-7a (DeepEmbed) models are",
         a.path, qkv, listed > 4 ? ", ..." : "");
  return a.contains("blocks.0.ffn.s_emb.weight") ? V7Variant::DeepEmbed : V7Variant::Plain;
}

std::unique_ptr<Model> load_model(std::shared_ptr<const TensorArchive> archive, const LoadOptions& options) {
  archive = to_official_layout(std::move(archive));  // GGUF, Hugging Face, ... -> official names
  const Arch arch = detect_arch(*archive);
  switch (arch) {
    case Arch::V4: return load_rwkv4(std::move(archive));
    case Arch::V5_0:
    case Arch::V5_1:
    case Arch::V5_2: return load_rwkv5(std::move(archive), arch, options.v5_group_norm_eps);
    case Arch::V6: return load_rwkv6(std::move(archive));
    case Arch::V7: {
      const V7Variant variant = detect_v7_variant(*archive);
      return load_rwkv7(std::move(archive), variant);
    }
  }
  fail("{}: RWKV-{} models are not supported", archive->path, arch_name(arch));
}

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& options) {
  return load_model(open_tensor_archive(path), options);
}

}  // namespace rwkv
