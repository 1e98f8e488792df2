// Writes GGUF version 3 files (ggml's container; read back by formats/gguf.h):
// "GGUF", version, tensor count, metadata count, the metadata key/value pairs
// in the given order, one info record per tensor (name, dimensions innermost
// first, ggml type, offset into the data section), zero padding to the
// alignment, then each tensor's bytes, each padded to the alignment. Knows
// nothing of RWKV: what goes in is decided by the caller (model/export_gguf.h).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "formats/tensor_archive.h"

namespace rwkv {

// A metadata value; the alternative picks the GGUF value type: uint32, int32,
// uint64, float32, bool, string, and arrays of strings, int32 or float32.
using GgufValue = std::variant<uint32_t, int32_t, uint64_t, float, bool, std::string, std::vector<std::string>,
                               std::vector<int32_t>, std::vector<float>>;

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

// One tensor to write: `source` gives the name, shape (outermost first, at
// most 4 dimensions) and data; `type` is what the file stores. A float source
// is converted to another float type while writing (round-to-nearest-even),
// a quantized one (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) is written as itself or
// dequantized to a float type; nothing is quantized here.
struct GgufTensor {
  TensorInfo source;
  DType type = DType::F32;
};

struct GgufWriteOptions {
  // Tensor data alignment, a power of two; a value other than GGUF's default
  // 32 is recorded as general.alignment (which `metadata` must not hold).
  uint32_t alignment = 32;
  // Called as tensor data is written, with bytes done so far and in all.
  std::function<void(size_t done, size_t total)> progress;
};

// ggml's type id of a dtype (F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, BF16 30).
uint32_t ggml_type_id(DType type);

// Writes the file atomically: it appears complete or not at all. Fails on
// duplicate keys or tensor names, empty names, more than 4 dimensions, data
// whose size does not match its shape, and impossible conversions, before
// anything is written.
void write_gguf(const std::string& path, std::span<const GgufKeyValue> metadata, std::span<const GgufTensor> tensors,
                const GgufWriteOptions& options = {});

}  // namespace rwkv
