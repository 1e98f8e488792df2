// NumPy .npy files (format version 1.0) of little-endian float32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rwkv {

// Writes `data` with the given shape atomically (no partial file on failure).
void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Reads a C-ordered '<f4' array; throws rwkv::Error on anything else.
NpyArray read_npy_f32(const std::string& path);

}  // namespace rwkv
