// Fetches a model's tensors from an archive by name, checking shapes, and
// tracks which tensors were used so unknown layouts are refused, not ignored.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/kernels.h"
#include "formats/tensor_archive.h"

namespace rwkv {

// Memory that model weights point into: the archive (possibly a mapped file)
// and any buffers made while loading (widened vectors, transposed matrices).
struct WeightStorage {
  std::shared_ptr<const TensorArchive> archive;
  std::vector<std::vector<float>> vectors;
  std::vector<std::vector<std::byte>> matrices;
};

class WeightReader {
 public:
  WeightReader(std::shared_ptr<const TensorArchive> archive, WeightStorage& storage);

  const TensorArchive& archive() const { return *archive_; }
  bool has(std::string_view name) const { return archive_->contains(name); }
  // The tensor, or an error naming the missing tensor.
  const TensorInfo& get(std::string_view name);
  // A tensor holding exactly n elements, all other dimensions 1, widened to f32.
  const float* vector(std::string_view name, int64_t n);
  // A tensor of exactly `shape`, flattened and widened to f32.
  const float* flat(std::string_view name, const std::vector<int64_t>& shape);
  // A matrix stored as [rows, cols] (rows = outputs), kept in its stored type;
  // quantized types the int8 kernels take also get a packed copy for matmul.
  MatRef matrix(std::string_view name, int64_t rows, int64_t cols);
  // As matrix, without the packed copy: for tables read a row at a time
  // (embeddings), never multiplied.
  MatRef table(std::string_view name, int64_t rows, int64_t cols);
  // A matrix stored transposed, as [cols, rows]; returned as [rows, cols].
  MatRef matrix_transposed(std::string_view name, int64_t rows, int64_t cols);
  // As matrix_transposed, also accepting leading dimensions of 1 (which the
  // official loaders squeeze away), e.g. [1, cols, rows].
  MatRef squeezed_matrix_transposed(std::string_view name, int64_t rows, int64_t cols);
  // Fails naming every tensor no call above asked for.
  void check_all_used() const;

 private:
  std::string shape_string(const TensorInfo& t) const;
  MatRef transposed(const TensorInfo& t, int64_t rows, int64_t cols);
  std::shared_ptr<const TensorArchive> archive_;
  WeightStorage& storage_;
  std::set<std::string> used_;
};

}  // namespace rwkv
