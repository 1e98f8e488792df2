// RWKV-4, as in BlinkDL's RWKV-LM RWKV-v4neo and the rwkv pip package: per
// channel, a decaying exponentially weighted average of past values ("WKV"),
// kept in the numerically stable form with a running maximum exponent.
#pragma once

#include <memory>

#include "formats/tensor_archive.h"
#include "model/model.h"

namespace rwkv {

// Builds an RWKV-4 model from an archive holding its tensors: the official
// layout, or rwkv.cpp's converted layout when archive.format == "rwkv.cpp"
// (time_decay already stored as -exp(time_decay)).
std::unique_ptr<Model> load_rwkv4(std::shared_ptr<const TensorArchive> archive);

}  // namespace rwkv
