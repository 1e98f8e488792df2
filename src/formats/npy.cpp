#include "formats/npy.h"

#include <cstring>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace rwkv {

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
    count *= shape[i];
  }
  if (shape.size() == 1) dims += ",";  // a 1-tuple is "(n,)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t preamble = 10;  // magic(6) + version(2) + header length(2)
  const size_t total = (preamble + header.size() + 1 + 63) / 64 * 64;
  header.append(total - preamble - header.size() - 1, ' ');
  header.push_back('\n');

  AtomicFile out(path);
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, 8);
  const uint16_t header_len = uint16_t(header.size());
  out.write(&header_len, 2);
  out.write(header.data(), header.size());
  out.write(data, size_t(count) * sizeof(float));
  out.commit();
}

NpyArray read_npy_f32(const std::string& path) {
  auto file = MappedFile::open(path);
  const auto* p = reinterpret_cast<const char*>(file->data());
  const size_t size = file->size();
  if (size < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0) fail("{}: not a .npy file", path);
  if (p[6] != 1) fail("{}: unsupported .npy version {}", path, int(p[6]));
  uint16_t header_len;
  std::memcpy(&header_len, p + 8, 2);
  if (10 + size_t(header_len) > size) fail("{}: truncated .npy header", path);
  const std::string header(p + 10, header_len);
  if (header.find("'descr': '<f4'") == std::string::npos) fail("{}: .npy is not little-endian float32", path);
  if (header.find("'fortran_order': False") == std::string::npos) fail("{}: .npy is Fortran-ordered", path);
  const size_t open = header.find("'shape': (");
  const size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) fail("{}: .npy header has no shape", path);
  NpyArray array;
  int64_t count = 1;
  const std::string dims = header.substr(open + 10, close - open - 10);
  size_t pos = 0;
  while (pos < dims.size()) {
    while (pos < dims.size() && (dims[pos] == ' ' || dims[pos] == ',')) ++pos;
    if (pos >= dims.size()) break;
    size_t end = pos;
    while (end < dims.size() && dims[end] >= '0' && dims[end] <= '9') ++end;
    if (end == pos) fail("{}: bad .npy shape '{}'", path, dims);
    array.shape.push_back(std::stoll(dims.substr(pos, end - pos)));
    count *= array.shape.back();
    pos = end;
  }
  const size_t data_offset = 10 + header_len;
  if (size - data_offset != size_t(count) * 4) fail("{}: .npy data size does not match its shape", path);
  array.data.resize(size_t(count));
  std::memcpy(array.data.data(), p + data_offset, size_t(count) * 4);
  return array;
}

}  // namespace rwkv
