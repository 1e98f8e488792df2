// rwkv.cpp's model file format (ggml-era "ggmf" container, versions 100/101).
// Shapes are stored innermost-first; the reader returns them outermost-first
// like every other reader. Tensor names and the converter's pre-transforms are
// left as they are: interpreting them is the model layer's job.
#pragma once

#include <span>
#include <string>

#include "formats/tensor_archive.h"

namespace rwkv {

constexpr uint32_t kRwkvCppMagic = 0x67676d66;  // "fmgg" on disk

bool is_rwkvcpp(std::span<const std::byte> head);
TensorArchive read_rwkvcpp(const std::string& path);

}  // namespace rwkv
