// GGUF files (ggml's container, versions 2 and 3), read without trusting any
// count, size or offset in them: each is checked against the file's size
// before it is used or allocated. Tensor names are kept as written (e.g.
// llama.cpp's "blk.0.time_mix_key.weight"); shapes are returned
// outermost-first like every reader here (GGUF stores ggml's innermost-first
// ne[]). F32, F16 and BF16 tensors point into the mapped file when aligned;
// ggml's block types Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (ids 8, 2, 3, 6, 7; the
// block layouts of core/quant.h, rows of whole blocks) always do. Other
// quantized types (k-quants, i-quants, ...) are refused with an error naming
// the type.
//
// Metadata: scalars go into TensorArchive::metadata as text (integers in
// decimal, floats in shortest round-trip form, bools as true/false, strings
// as they are); arrays of strings into string_lists and arrays of numbers or
// bools into number_lists. Also recorded: "gguf.version", "gguf.alignment".
#pragma once

#include <span>
#include <string>

#include "formats/tensor_archive.h"

namespace rwkv {

// True if `head` (a file's first bytes; 4 are enough) starts with "GGUF".
bool is_gguf(std::span<const std::byte> head);

TensorArchive read_gguf(const std::string& path);

}  // namespace rwkv
