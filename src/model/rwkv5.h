// RWKV-5 ("Eagle"): 5.0, 5.1 and 5.2 (x052), as in BlinkDL's RWKV-LM RWKV-v5
// and the rwkv pip package. Per head a matrix-valued state with a fixed
// decay; the three versions differ only in data (see rwkv5.cpp).
#pragma once

#include <memory>

#include "formats/tensor_archive.h"
#include "model/config.h"
#include "model/model.h"

namespace rwkv {

// The official att.ln_x GroupNorm epsilon of RWKV-5 (and 6): ChatRWKV writes
// 64e-5; in training it is nn.GroupNorm's 1e-5 applied to x / 8
// (head_size_divisor), the same thing.
inline constexpr float kV5OfficialGroupNormEps = 64e-5f;

// Builds an RWKV-5.x model (`arch` is V5_0, V5_1 or V5_2, from detect_arch)
// from the official layout, or rwkv.cpp's converted layout when
// archive.format == "rwkv.cpp" (decay stored as exp(-exp(time_decay)),
// time_first as exp(time_first), both reshaped). `group_norm_eps` is the
// att.ln_x epsilon.
std::unique_ptr<Model> load_rwkv5(std::shared_ptr<const TensorArchive> archive, Arch arch,
                                  float group_norm_eps = kV5OfficialGroupNormEps);

}  // namespace rwkv
