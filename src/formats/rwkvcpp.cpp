#include "formats/rwkvcpp.h"

#include <cstring>

#include "core/error.h"

namespace rwkv {
namespace {

// rwkv.cpp's data type codes (docs/FILE_FORMAT.md).
const char* type_name(uint32_t t) {
  switch (t) {
    case 0: return "FP32";
    case 1: return "FP16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 4: return "Q4_1_O";
    case 5: return "Q4_2";
    case 6: return "Q4_3";
    case 7: return "Q5_0";
    case 8: return "Q5_1";
    case 9: return "Q8_0";
    default: return nullptr;
  }
}

class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }
  bool at_end() const { return offset_ == bytes_.size(); }
  uint32_t u32(const char* what) {
    if (remaining() < 4) fail("{}: file is truncated while reading {} at offset {}", path_, what, offset_);
    uint32_t v;
    std::memcpy(&v, bytes_.data() + offset_, 4);
    offset_ += 4;
    return v;
  }
  const std::byte* take(size_t n, const char* what) {
    if (remaining() < n)
      fail("{}: file is truncated: {} needs {} bytes at offset {}, only {} remain", path_, what, n, offset_,
           remaining());
    const std::byte* p = bytes_.data() + offset_;
    offset_ += n;
    return p;
  }

 private:
  std::span<const std::byte> bytes_;
  const std::string& path_;
  size_t offset_ = 0;
};

}  // namespace

bool is_rwkvcpp(std::span<const std::byte> head) {
  if (head.size() < 4) return false;
  uint32_t magic;
  std::memcpy(&magic, head.data(), 4);
  return magic == kRwkvCppMagic;
}

TensorArchive read_rwkvcpp(const std::string& path) {
  auto file = MappedFile::open(path);
  TensorArchive archive;
  archive.format = "rwkv.cpp";
  archive.path = path;
  archive.keep_alive(file);

  Cursor in(file->bytes(), path);
  if (file->size() < 24) fail("{}: file is truncated: {} bytes is shorter than the 24-byte rwkv.cpp header", path, file->size());
  if (in.u32("magic") != kRwkvCppMagic) fail("{}: wrong magic: not an rwkv.cpp model file", path);
  const uint32_t version = in.u32("version");
  if (version != 100 && version != 101) fail("{}: unsupported rwkv.cpp file version {} (expected 100 or 101)", path, version);
  const uint32_t n_vocab = in.u32("n_vocab");
  const uint32_t n_embd = in.u32("n_embed");
  const uint32_t n_layer = in.u32("n_layer");
  const uint32_t data_type = in.u32("data_type");
  if (type_name(data_type) == nullptr) fail("{}: unknown data type {} in the header", path, data_type);
  archive.metadata["rwkvcpp.version"] = std::to_string(version);
  archive.metadata["rwkvcpp.n_vocab"] = std::to_string(n_vocab);
  archive.metadata["rwkvcpp.n_embed"] = std::to_string(n_embd);
  archive.metadata["rwkvcpp.n_layer"] = std::to_string(n_layer);
  archive.metadata["rwkvcpp.data_type"] = type_name(data_type);

  while (!in.at_end()) {
    const size_t start = in.offset();
    const uint32_t n_dims = in.u32("tensor header");
    const uint32_t key_length = in.u32("tensor header");
    const uint32_t type = in.u32("tensor header");
    if (n_dims < 1 || n_dims > 4) fail("{}: tensor at offset {} has {} dimensions (expected 1 to 4)", path, start, n_dims);
    if (key_length < 1 || key_length > 1024)
      fail("{}: tensor at offset {} has a name length of {} (expected 1 to 1024)", path, start, key_length);
    int64_t dims[4];
    for (uint32_t i = 0; i < n_dims; ++i) dims[i] = in.u32("tensor shape");
    const auto* key_bytes = in.take(key_length, "tensor name");
    std::string name(reinterpret_cast<const char*>(key_bytes), key_length);

    const char* tname = type_name(type);
    if (tname == nullptr) fail("{}: tensor '{}' has unknown data type {}", path, name, type);
    if (type > 1)
      fail("{}: tensor '{}' is quantized ({}); quantized rwkv.cpp files are not supported yet", path, name, tname);
    const DType dtype = type == 0 ? DType::F32 : DType::F16;

    TensorInfo info;
    info.name = name;
    info.dtype = dtype;
    uint64_t numel = 1;
    for (uint32_t i = 0; i < n_dims; ++i) {
      const int64_t d = dims[n_dims - 1 - i];  // stored innermost first
      if (d <= 0 || d > (int64_t(1) << 32)) fail("{}: tensor '{}' has an invalid dimension {}", path, name, d);
      info.shape.push_back(d);
      numel *= uint64_t(d);
      if (numel > file->size()) fail("{}: tensor '{}' claims more elements than the file holds", path, name);
    }
    info.nbytes = size_t(numel) * dtype_size(dtype);
    const size_t data_offset = in.offset();
    const std::byte* data = in.take(info.nbytes, "tensor data");
    if (data_offset % dtype_size(dtype) == 0) {
      info.data = data;
    } else {  // unaligned in the file: copy once so kernels see aligned elements
      std::byte* copy = archive.own(info.nbytes);
      std::memcpy(copy, data, info.nbytes);
      info.data = copy;
    }
    archive.add(std::move(info));
  }
  return archive;
}

}  // namespace rwkv
