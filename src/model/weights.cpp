#include "model/weights.h"

#include <cstring>

#include "core/error.h"

namespace rwkv {

WeightReader::WeightReader(std::shared_ptr<const TensorArchive> archive, WeightStorage& storage)
    : archive_(std::move(archive)), storage_(storage) {
  storage_.archive = archive_;
}

std::string WeightReader::shape_string(const TensorInfo& t) const {
  std::string s = "[";
  for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

const TensorInfo& WeightReader::get(std::string_view name) {
  const TensorInfo* t = archive_->find(name);
  if (t == nullptr) fail("{}: missing tensor '{}'", archive_->path, name);
  used_.insert(std::string(name));
  return *t;
}

const float* WeightReader::vector(std::string_view name, int64_t n) {
  const TensorInfo& t = get(name);
  int64_t non_unit = 0;
  for (int64_t d : t.shape) non_unit += d != 1;
  if (t.numel() != n || non_unit > 1)
    fail("{}: tensor '{}' has shape {}, expected a vector of {} elements", archive_->path, name, shape_string(t), n);
  std::vector<float>& out = storage_.vectors.emplace_back(size_t(n));
  convert_to_f32(t.dtype, t.data, out.data(), size_t(n));
  return out.data();
}

const float* WeightReader::flat(std::string_view name, const std::vector<int64_t>& shape) {
  const TensorInfo& t = get(name);
  if (t.shape != shape) {
    TensorInfo expected;
    expected.shape = shape;
    fail("{}: tensor '{}' has shape {}, expected {}", archive_->path, name, shape_string(t), shape_string(expected));
  }
  std::vector<float>& out = storage_.vectors.emplace_back(size_t(t.numel()));
  convert_to_f32(t.dtype, t.data, out.data(), out.size());
  return out.data();
}

MatRef WeightReader::matrix(std::string_view name, int64_t rows, int64_t cols) {
  MatRef m = table(name, rows, cols);
  if (packable(m.dtype)) {
    m.packed = storage_.matrices.emplace_back(pack_matrix(m)).data();
    archive_->release_pages(m.data, m.bytes());  // the packed copy is what decoding reads
  }
  return m;
}

MatRef WeightReader::table(std::string_view name, int64_t rows, int64_t cols) {
  const TensorInfo& t = get(name);
  if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
    fail("{}: tensor '{}' has shape {}, expected [{}, {}]", archive_->path, name, shape_string(t), rows, cols);
  return MatRef{t.dtype, rows, cols, t.data};
}

MatRef WeightReader::matrix_transposed(std::string_view name, int64_t rows, int64_t cols) {
  const TensorInfo& t = get(name);
  if (t.shape.size() != 2 || t.shape[0] != cols || t.shape[1] != rows)
    fail("{}: tensor '{}' has shape {}, expected [{}, {}]", archive_->path, name, shape_string(t), cols, rows);
  return transposed(t, rows, cols);
}

MatRef WeightReader::squeezed_matrix_transposed(std::string_view name, int64_t rows, int64_t cols) {
  const TensorInfo& t = get(name);
  std::vector<int64_t> shape = t.shape;
  while (shape.size() > 2 && shape.front() == 1) shape.erase(shape.begin());
  if (shape != std::vector<int64_t>{cols, rows})
    fail("{}: tensor '{}' has shape {}, expected [{}, {}]", archive_->path, name, shape_string(t), cols, rows);
  return transposed(t, rows, cols);
}

MatRef WeightReader::transposed(const TensorInfo& t, int64_t rows, int64_t cols) {
  // Quantized blocks run along the stored rows and cannot be transposed.
  if (is_quantized(t.dtype))
    fail("{}: tensor '{}' is quantized ({}) but stored transposed; only [out, in] matrices can be quantized",
         archive_->path, t.name, dtype_name(t.dtype));
  const size_t elem = dtype_size(t.dtype);
  std::vector<std::byte>& out = storage_.matrices.emplace_back(size_t(rows * cols) * elem);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      std::memcpy(out.data() + size_t(r * cols + c) * elem, t.data + size_t(c * rows + r) * elem, elem);
  return MatRef{t.dtype, rows, cols, out.data()};
}

void WeightReader::check_all_used() const {
  std::string unexpected;
  for (const TensorInfo& t : archive_->tensors()) {
    if (used_.count(t.name) == 0) unexpected += (unexpected.empty() ? "'" : ", '") + t.name + "'";
  }
  if (!unexpected.empty())
    fail("{}: unknown model layout: unexpected tensors {}", archive_->path, unexpected);
}

}  // namespace rwkv
