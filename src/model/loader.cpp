#include "model/loader.h"

#include "core/error.h"
#include "formats/open.h"
#include "model/rwkv7.h"

namespace rwkv {

Arch detect_arch(const TensorArchive& a) {
  // The same tensor-presence rules the official loaders use, newest first.
  if (a.contains("blocks.0.att.k_k") || a.contains("blocks.0.att.x_rwkvag")) return Arch::V7;
  if (a.contains("blocks.0.att.time_maa_x")) return Arch::V6;
  if (a.contains("blocks.0.att.ln_x.weight")) {
    if (!a.contains("blocks.0.att.gate.weight")) return Arch::V5_0;
    const TensorInfo* decay = a.find("blocks.0.att.time_decay");
    if (decay != nullptr && decay->shape.size() >= 2 && decay->shape.back() > 1) return Arch::V5_2;
    return Arch::V5_1;
  }
  if (a.contains("blocks.0.att.time_first")) return Arch::V4;
  if (!a.contains("emb.weight")) fail("{}: not an RWKV model (no 'emb.weight' tensor)", a.path);
  fail("{}: unknown RWKV layout: no version's tensors found in layer 0", a.path);
}

std::unique_ptr<Model> load_model(std::shared_ptr<const TensorArchive> archive) {
  const Arch arch = detect_arch(*archive);
  if (arch == Arch::V7) return load_rwkv7(std::move(archive));
  fail("{}: RWKV-{} models are not supported yet (only RWKV-7 is)", archive->path, arch_name(arch));
}

std::unique_ptr<Model> load_model(const std::string& path) { return load_model(open_tensor_archive(path)); }

}  // namespace rwkv
