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

std::unique_ptr<Model> load_model(std::shared_ptr<const TensorArchive> archive, const LoadOptions& options) {
  archive = to_official_layout(std::move(archive));  // GGUF, Hugging Face, ... -> official names
  const Arch arch = detect_arch(*archive);
  switch (arch) {
    case Arch::V4: return load_rwkv4(std::move(archive));
    case Arch::V5_0:
    case Arch::V5_1:
    case Arch::V5_2: return load_rwkv5(std::move(archive), arch, options.v5_group_norm_eps);
    case Arch::V6: return load_rwkv6(std::move(archive));
    case Arch::V7: return load_rwkv7(std::move(archive));
  }
  fail("{}: RWKV-{} models are not supported", archive->path, arch_name(arch));
}

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& options) {
  return load_model(open_tensor_archive(path), options);
}

}  // namespace rwkv
