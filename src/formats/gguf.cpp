#include "formats/gguf.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace rwkv {
namespace {

// gguf_type: the value types of metadata.
enum : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

const char* value_type_name(uint32_t t) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32", "float32",
                                "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return t < 13 ? names[t] : nullptr;
}

// Bytes of one scalar of type t (strings and arrays: their smallest encoding).
size_t min_value_size(uint32_t t) {
  switch (t) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: return 8;
    case kString: return 8;     // its length
    case kArray: return 4 + 8;  // element type and count
    default: return 1;
  }
}

// ggml_type names, for messages (holes are types ggml has since removed).
std::string ggml_type_name(uint32_t t) {
  static const char* names[] = {
      "F32",     "F16",    "Q4_0",    "Q4_1",  nullptr, nullptr,  "Q5_0",   "Q5_1",    "Q8_0",   "Q8_1",
      "Q2_K",    "Q3_K",   "Q4_K",    "Q5_K",  "Q6_K",  "Q8_K",   "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
      "IQ4_NL",  "IQ3_S",  "IQ2_S",   "IQ4_XS", "I8",   "I16",    "I32",    "I64",     "F64",    "IQ1_M",
      "BF16",    nullptr,  nullptr,   nullptr, "TQ1_0", "TQ2_0",  nullptr,  nullptr,   nullptr,  "MXFP4"};
  if (t < sizeof(names) / sizeof(names[0]) && names[t] != nullptr) return names[t];
  return fmt::format("unknown type {}", t);
}

class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  uint64_t offset() const { return offset_; }
  uint64_t remaining() const { return bytes_.size() - offset_; }

  void need(uint64_t n, std::string_view what) const {
    if (remaining() < n)
      fail("{}: file is truncated: {} needs {} bytes at offset {}, only {} remain", path_, what, n, offset_,
           remaining());
  }
  template <typename T>
  T scalar(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return v;
  }
  std::string string(std::string_view what) {
    const uint64_t n = scalar<uint64_t>(what);
    need(n, what);  // before allocating anything the length claims
    std::string s(reinterpret_cast<const char*>(bytes_.data() + offset_), size_t(n));
    offset_ += n;
    return s;
  }

 private:
  std::span<const std::byte> bytes_;
  const std::string& path_;
  uint64_t offset_ = 0;
};

class GgufReader {
 public:
  GgufReader(std::shared_ptr<const MappedFile> file, const std::string& path)
      : file_(std::move(file)), path_(path), in_(file_->bytes(), path) {}
  TensorArchive read();

 private:
  void read_kv(TensorArchive& archive);
  double number(uint32_t type, std::string_view what);
  std::string scalar_text(uint32_t type, std::string_view what);

  std::shared_ptr<const MappedFile> file_;
  const std::string& path_;
  Cursor in_;
};

double GgufReader::number(uint32_t type, std::string_view what) {
  switch (type) {
    case kU8: return in_.scalar<uint8_t>(what);
    case kI8: return in_.scalar<int8_t>(what);
    case kU16: return in_.scalar<uint16_t>(what);
    case kI16: return in_.scalar<int16_t>(what);
    case kU32: return in_.scalar<uint32_t>(what);
    case kI32: return in_.scalar<int32_t>(what);
    case kF32: return in_.scalar<float>(what);
    case kBool: return in_.scalar<uint8_t>(what) != 0;
    case kU64: return double(in_.scalar<uint64_t>(what));
    case kI64: return double(in_.scalar<int64_t>(what));
    case kF64: return in_.scalar<double>(what);
  }
  fail("{}: metadata {} has value type {}, which is not a number", path_, what, type);
}

std::string GgufReader::scalar_text(uint32_t type, std::string_view what) {
  switch (type) {
    case kU8: return std::to_string(in_.scalar<uint8_t>(what));
    case kI8: return std::to_string(in_.scalar<int8_t>(what));
    case kU16: return std::to_string(in_.scalar<uint16_t>(what));
    case kI16: return std::to_string(in_.scalar<int16_t>(what));
    case kU32: return std::to_string(in_.scalar<uint32_t>(what));
    case kI32: return std::to_string(in_.scalar<int32_t>(what));
    case kU64: return std::to_string(in_.scalar<uint64_t>(what));
    case kI64: return std::to_string(in_.scalar<int64_t>(what));
    case kF32: return fmt::format("{}", in_.scalar<float>(what));
    case kF64: return fmt::format("{}", in_.scalar<double>(what));
    case kBool: {
      const uint8_t b = in_.scalar<uint8_t>(what);
      if (b > 1) fail("{}: metadata {} is a bool holding {}", path_, what, b);
      return b ? "true" : "false";
    }
    case kString: return in_.string(what);
  }
  fail("{}: metadata {} has unknown value type {}", path_, what, type);
}

void GgufReader::read_kv(TensorArchive& archive) {
  const uint64_t start = in_.offset();
  const std::string key = in_.string("a metadata key");
  if (key.empty()) fail("{}: metadata key at offset {} is empty", path_, start);
  if (archive.metadata.count(key) || archive.string_lists.count(key) || archive.number_lists.count(key))
    fail("{}: duplicate metadata key '{}'", path_, key);
  const std::string what = "'" + key + "'";
  const uint32_t type = in_.scalar<uint32_t>("a metadata type");
  if (value_type_name(type) == nullptr) fail("{}: metadata {} has unknown value type {}", path_, what, type);
  if (type != kArray) {
    archive.metadata[key] = scalar_text(type, what);
    return;
  }
  const uint32_t elem = in_.scalar<uint32_t>("an array type");
  const uint64_t count = in_.scalar<uint64_t>("an array length");
  if (value_type_name(elem) == nullptr) fail("{}: metadata {} is an array of unknown type {}", path_, what, elem);
  if (elem == kArray) fail("{}: metadata {} is an array of arrays, which GGUF readers do not support", path_, what);
  // Every element takes at least min_value_size bytes: a count the rest of
  // the file cannot hold is a lie, found before anything is reserved.
  if (count > in_.remaining() / min_value_size(elem))
    fail("{}: metadata {} claims {} elements of {}, more than the remaining {} bytes can hold (truncated?)", path_, what, count,
         value_type_name(elem), in_.remaining());
  if (elem == kString) {
    auto& list = archive.string_lists[key];
    list.reserve(size_t(count));
    for (uint64_t i = 0; i < count; ++i) list.push_back(in_.string(what));
  } else {
    auto& list = archive.number_lists[key];
    list.reserve(size_t(count));
    for (uint64_t i = 0; i < count; ++i) list.push_back(number(elem, what));
  }
}

TensorArchive GgufReader::read() {
  TensorArchive archive;
  archive.format = "gguf";
  archive.path = path_;
  archive.keep_alive(file_);

  if (file_->size() < 4 || !is_gguf(file_->bytes())) fail("{}: wrong magic: not a GGUF file", path_);
  in_.scalar<uint32_t>("the magic");
  const uint32_t version = in_.scalar<uint32_t>("the version");
  if (version == 1) fail("{}: GGUF version 1 is not supported (re-convert it with a current llama.cpp)", path_);
  if (version != 2 && version != 3) fail("{}: unsupported GGUF version {} (expected 2 or 3)", path_, version);
  const uint64_t n_tensors = in_.scalar<uint64_t>("the tensor count");
  const uint64_t n_kv = in_.scalar<uint64_t>("the metadata count");
  // Smallest encodings: a key/value is a key length, a type and one byte; a
  // tensor info is a name length, n_dims, a type and an offset.
  if (n_kv > in_.remaining() / (8 + 4 + 1))
    fail("{}: header claims {} metadata entries, more than the file can hold (truncated?)", path_, n_kv);
  if (n_tensors > in_.remaining() / (8 + 4 + 4 + 8))
    fail("{}: header claims {} tensors, more than the file can hold (truncated?)", path_, n_tensors);
  archive.metadata["gguf.version"] = std::to_string(version);

  for (uint64_t i = 0; i < n_kv; ++i) read_kv(archive);

  uint64_t alignment = 32;  // GGUF_DEFAULT_ALIGNMENT
  if (auto it = archive.metadata.find("general.alignment"); it != archive.metadata.end()) {
    uint64_t a = 0;
    const auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), a);
    if (ec != std::errc() || end != it->second.data() + it->second.size() || a == 0 || (a & (a - 1)) != 0 ||
        a > (uint64_t(1) << 30))
      fail("{}: general.alignment is '{}', not a power of two", path_, it->second);
    alignment = a;
  } else if (archive.string_lists.count("general.alignment") || archive.number_lists.count("general.alignment")) {
    fail("{}: general.alignment is an array, not a number", path_);
  }
  archive.metadata["gguf.alignment"] = std::to_string(alignment);

  struct Info {
    TensorInfo t;
    uint32_t type;
    uint64_t offset;
  };
  std::vector<Info> infos;
  infos.reserve(size_t(n_tensors));
  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Info info;
    info.t.name = in_.string("a tensor name");
    const std::string& name = info.t.name;
    if (!names.insert(name).second) fail("{}: duplicate tensor '{}'", path_, name);
    const uint32_t n_dims = in_.scalar<uint32_t>("a tensor's dimension count");
    if (n_dims > 4) fail("{}: tensor '{}' has {} dimensions (ggml allows at most 4)", path_, name, n_dims);
    int64_t ne[4] = {1, 1, 1, 1};
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t v = in_.scalar<uint64_t>("a tensor dimension");
      if (v > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, int64_t(v), &numel))
        fail("{}: tensor '{}' has an absurd dimension {}", path_, name, v);
      ne[d] = int64_t(v);
    }
    for (uint32_t d = n_dims; d-- > 0;) info.t.shape.push_back(ne[d]);  // outermost first
    info.type = in_.scalar<uint32_t>("a tensor type");
    info.offset = in_.scalar<uint64_t>("a tensor offset");
    switch (info.type) {
      case 0: info.t.dtype = DType::F32; break;
      case 1: info.t.dtype = DType::F16; break;
      case 2: info.t.dtype = DType::Q4_0; break;
      case 3: info.t.dtype = DType::Q4_1; break;
      case 6: info.t.dtype = DType::Q5_0; break;
      case 7: info.t.dtype = DType::Q5_1; break;
      case 8: info.t.dtype = DType::Q8_0; break;
      case 30: info.t.dtype = DType::BF16; break;
      default:
        fail("{}: tensor '{}' has ggml type {}; supported GGUF tensor types are F32, F16, BF16, Q8_0, Q4_0, Q4_1, "
             "Q5_0 and Q5_1 (for k-quant files, requantize with llama-quantize to one of these, e.g. Q8_0)",
             path_, name, ggml_type_name(info.type));
    }
    // ggml blocks run along the innermost dimension (ne[0]): each row is a
    // whole number of blocks. A block of n elements takes at least one byte,
    // which bounds the count before the data extents are checked.
    const DTypeTraits& traits = dtype_traits(info.t.dtype);
    if (ne[0] % traits.block_size != 0)
      fail("{}: tensor '{}' is {} but its rows have {} elements, not a multiple of the block size {}", path_, name,
           ggml_type_name(info.type), ne[0], traits.block_size);
    if (uint64_t(numel) / uint64_t(traits.block_size) > file_->size() / uint64_t(traits.block_bytes))
      fail("{}: tensor '{}' claims {} elements, more than the file holds (truncated?)", path_, name, numel);
    info.t.nbytes = dtype_bytes(info.t.dtype, numel);
    if (info.offset % alignment != 0)
      fail("{}: tensor '{}' has offset {}, not a multiple of the alignment {}", path_, name, info.offset, alignment);
    infos.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t data_start = (in_.offset() + alignment - 1) / alignment * alignment;
  const uint64_t data_size = file_->size() > data_start ? file_->size() - data_start : 0;
  std::vector<std::pair<uint64_t, uint64_t>> extents;  // [offset, end) of each tensor
  for (const Info& info : infos) {
    if (info.offset > data_size || info.t.nbytes > data_size - info.offset)
      fail("{}: tensor '{}' ({} bytes at data offset {}) lies outside the file's {} data bytes (truncated?)", path_,
           info.t.name, info.t.nbytes, info.offset, data_size);
    if (info.t.nbytes != 0) extents.emplace_back(info.offset, info.offset + info.t.nbytes);
  }
  std::sort(extents.begin(), extents.end());
  for (size_t i = 1; i < extents.size(); ++i)
    if (extents[i].first < extents[i - 1].second)
      fail("{}: tensors overlap in the data section (at data offset {})", path_, extents[i].first);

  for (Info& info : infos) {
    const std::byte* src = file_->data() + data_start + info.offset;
    if (info.t.nbytes == 0) {
      info.t.data = archive.own(0);
    } else if (is_quantized(info.t.dtype) || reinterpret_cast<uintptr_t>(src) % dtype_size(info.t.dtype) == 0) {
      info.t.data = src;  // zero copy (quantized blocks are read bytewise): the archive keeps the mapping alive
    } else {  // only with an alignment of 1 and an odd offset
      std::byte* copy = archive.own(info.t.nbytes);
      std::memcpy(copy, src, info.t.nbytes);
      info.t.data = copy;
    }
    archive.add(std::move(info.t));
  }
  return archive;
}

}  // namespace

bool is_gguf(std::span<const std::byte> head) {
  return head.size() >= 4 && std::memcmp(head.data(), "GGUF", 4) == 0;
}

TensorArchive read_gguf(const std::string& path) { return GgufReader(MappedFile::open(path), path).read(); }

}  // namespace rwkv
