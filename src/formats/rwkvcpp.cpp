#include "formats/rwkvcpp.h"

#include <cstring>

#include "core/error.h"

namespace rwkv {
namespace {

// rwkv.cpp's data type codes (docs/FILE_FORMAT.md) and the DType each loads
// as; Q4_1_O, Q4_2 and Q4_3 were removed from rwkv.cpp and are refused.
// Code kRwkvCppCodeQ4NL is this engine's own.
struct TypeCode {
  const char* name;
  bool supported;
  DType dtype;
};

const TypeCode* type_code(uint32_t t) {
  static const TypeCode codes[] = {
      {"FP32", true, DType::F32},     {"FP16", true, DType::F16},     {"Q4_0", true, DType::Q4_0},
      {"Q4_1", true, DType::Q4_1},    {"Q4_1_O", false, DType::F32},  {"Q4_2", false, DType::F32},
      {"Q4_3", false, DType::F32},    {"Q5_0", true, DType::Q5_0},    {"Q5_1", true, DType::Q5_1},
      {"Q8_0", true, DType::Q8_0},
  };
  static const TypeCode q4_nl = {"Q4_NL", true, DType::Q4_NL};
  if (t == kRwkvCppCodeQ4NL) return &q4_nl;
  return t < sizeof(codes) / sizeof(codes[0]) ? &codes[t] : nullptr;
}

const char* type_name(uint32_t t) {
  const TypeCode* c = type_code(t);
  return c == nullptr ? nullptr : c->name;
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

uint32_t rwkvcpp_type_code(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q5_0: return 7;
    case DType::Q5_1: return 8;
    case DType::Q8_0: return 9;
    case DType::Q4_NL: return kRwkvCppCodeQ4NL;
    case DType::BF16: break;
  }
  fail("{} has no rwkv.cpp data type code", dtype_name(t));
}

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

    const TypeCode* code = type_code(type);
    if (code == nullptr) fail("{}: tensor '{}' has unknown data type {}", path, name, type);
    if (!code->supported)
      fail("{}: tensor '{}' is in the {} format, which rwkv.cpp removed; re-quantize the model from FP32 or FP16",
           path, name, code->name);
    const DType dtype = code->dtype;
    if (is_quantized(dtype)) {
      // Quantized blocks before version 101 had other layouts (ggml changed
      // them in 2023); rwkv.cpp refuses those files too.
      if (version != 101)
        fail("{}: tensor '{}' is quantized ({}) in a version {} file, whose block layout is obsolete; re-quantize "
             "the model with a current rwkv.cpp or `rwkv quantize`",
             path, name, code->name, version);
      // Only matrices are ever quantized, each row a whole number of blocks.
      if (n_dims != 2 || dims[0] % dtype_traits(dtype).block_size != 0)
        fail("{}: quantized tensor '{}' ({}) must be a matrix whose rows are a multiple of {} elements", path, name,
             code->name, dtype_traits(dtype).block_size);
    }
    TensorInfo info;
    info.name = name;
    info.dtype = dtype;
    uint64_t numel = 1;
    for (uint32_t i = 0; i < n_dims; ++i) {
      const int64_t d = dims[n_dims - 1 - i];  // stored innermost first
      if (d <= 0 || d > (int64_t(1) << 32)) fail("{}: tensor '{}' has an invalid dimension {}", path, name, d);
      info.shape.push_back(d);
      // A block of block_size elements takes at least one byte, which bounds
      // the count before in.take checks the exact size.
      if (__builtin_mul_overflow(numel, uint64_t(d), &numel) ||
          numel > uint64_t(file->size()) * uint64_t(dtype_traits(dtype).block_size))
        fail("{}: tensor '{}' claims more elements than the file holds", path, name);
    }
    info.nbytes = dtype_bytes(dtype, int64_t(numel));
    const size_t data_offset = in.offset();
    const std::byte* data = in.take(info.nbytes, "tensor data");
    // Quantized blocks are read bytewise by the kernels and need no alignment.
    if (is_quantized(dtype) || data_offset % dtype_size(dtype) == 0) {
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
