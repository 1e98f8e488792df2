// safetensors files: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {string: string}}), then the tensors' bytes. The reader
// checks the header against the file before using it (length, offsets within
// the data, sizes matching shapes, no overlaps or holes, no duplicate names)
// and maps F32/F16/BF16 tensors in place; other dtypes are refused by name.
// "__metadata__" entries go into TensorArchive::metadata.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "formats/tensor_archive.h"

namespace rwkv {

// True if `head` (a file's first bytes; 9 are enough) looks like a safetensors
// header for a file of `file_size` bytes: a length that fits, then '{'.
bool is_safetensors(std::span<const std::byte> head, uint64_t file_size);

// Tensors keep the header's order.
TensorArchive read_safetensors(const std::string& path);

struct SafetensorsWriteOptions {
  std::map<std::string, std::string> metadata;  // written as "__metadata__"
  // Stores every tensor as this type (converted while writing); unset: each keeps its own.
  std::optional<DType> dtype;
  // Called as tensor data is written, with bytes done so far and in all.
  std::function<void(size_t done, size_t total)> progress;
};

// Writes `tensors` (unique names; nbytes = numel * dtype_size, contiguous)
// atomically. The header lists them in the given order; their data is laid
// out widest dtype first so that every tensor starts aligned to its element
// size (the header is padded with spaces so the data starts at a multiple of 64).
void write_safetensors(const std::string& path, std::span<const TensorInfo> tensors,
                       const SafetensorsWriteOptions& options = {});

}  // namespace rwkv
