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
std::unique_ptr<Model> load_rwkv7(std::shared_ptr<const TensorArchive> archive);

}  // namespace rwkv
