// RWKV-7 "Goose" (x070), as in BlinkDL's RWKV-LM RWKV-v7 and the rwkv pip
// package: per head a matrix-valued state updated by a generalised delta rule
// with data-dependent decay, in-context learning rate and value residual.
#pragma once

#include <memory>

#include "model/model.h"
#include "model/weights.h"

namespace rwkv {

// Builds an RWKV-7 model from an archive holding its tensors (official
// layout, or rwkv.cpp's converted layout when archive.format == "rwkv.cpp").
// A DeepEmbed model also gates each channel mix's hidden layer per token:
//   M = s_emb[token] + s_emb_x . ln0(emb[token]), viewed as [D, D] (D = 32)
//   hidden *= ((x s1) M) s2 + s0     (x: the ln2 output, not token-shifted)
std::unique_ptr<Model> load_rwkv7(std::shared_ptr<const TensorArchive> archive,
                                  V7Variant variant = V7Variant::Plain);

}  // namespace rwkv
