// PyTorch checkpoints written by torch.save (torch >= 1.6 zip format) holding a
// dict of float32/float16/bfloat16 tensors, read without Python and without
// executing anything in the file.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "formats/tensor_archive.h"

namespace rwkv {

// Reads the state dict in `path`; tensors keep the dict's order. Contiguous
// tensors in uncompressed entries point into the mapped file; others are copied
// once into row-major buffers owned by the archive.
TensorArchive read_pth(const std::string& path);

// True if `head` (a file's first bytes; 4 are enough) starts like a zip file.
bool is_zip(std::span<const std::byte> head);

}  // namespace rwkv
