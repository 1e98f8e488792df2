// Loads any supported model file: detects the container from its content and
// the RWKV version from its tensors.
#pragma once

#include <memory>
#include <string>

#include "formats/tensor_archive.h"
#include "model/model.h"

namespace rwkv {

// Numerical choices that differ between implementations. The defaults are
// the official code's.
struct LoadOptions {
  // Epsilon of RWKV-5.x's per-head GroupNorm (att.ln_x). Official: 64e-5;
  // rwkv.cpp uses 1e-5, so its expected logits for 5.x need that value.
  float v5_group_norm_eps = 64e-5f;
};

// The RWKV version the tensors describe; fails for layouts no version matches.
Arch detect_arch(const TensorArchive& archive);

// The RWKV-7 release variant (see V7Variant) the tensors describe. Fails for
// variants the engine does not run (RWKV-7b's DeepEmbed attention,
// blocks.N.qkv.*), naming their tensors.
V7Variant detect_v7_variant(const TensorArchive& archive);

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& options = {});
std::unique_ptr<Model> load_model(std::shared_ptr<const TensorArchive> archive, const LoadOptions& options = {});

}  // namespace rwkv
