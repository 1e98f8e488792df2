// RWKV-6 ("Finch", x060), as in BlinkDL's RWKV-LM (RWKV_Tmix_x060) and the
// rwkv pip package: RWKV-5's per-head matrix state with a data-dependent,
// per-token decay and data-dependent token-shift mixes (both LoRAs).
#pragma once

#include <memory>

#include "formats/tensor_archive.h"
#include "model/model.h"

namespace rwkv {

// Builds an RWKV-6 model from the official layout, or rwkv.cpp's converted
// layout when archive.format == "rwkv.cpp" (LoRA matrices transposed,
// time_decay and time_faaaa reshaped to [H, N, 1]; no value transforms).
std::unique_ptr<Model> load_rwkv6(std::shared_ptr<const TensorArchive> archive);

}  // namespace rwkv
