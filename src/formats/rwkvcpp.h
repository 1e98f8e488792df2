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

// Data type code of this engine's own Q4_NL (core/quant.h) in rwkv.cpp files:
// far outside rwkv.cpp's codes 0-9, so rwkv.cpp refuses such files (only
// this engine reads them) instead of misreading them.
constexpr uint32_t kRwkvCppCodeQ4NL = 100;

// The data type code (rwkv.cpp's docs/FILE_FORMAT.md, plus kRwkvCppCodeQ4NL)
// under which `t` is written; fails for BF16, which rwkv.cpp files cannot hold.
uint32_t rwkvcpp_type_code(DType t);

bool is_rwkvcpp(std::span<const std::byte> head);
TensorArchive read_rwkvcpp(const std::string& path);

}  // namespace rwkv
