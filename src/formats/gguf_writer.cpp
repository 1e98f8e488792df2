#include "formats/gguf_writer.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <type_traits>

#include "core/atomic_file.h"
#include "core/error.h"
#include "formats/pth_writer.h"

namespace rwkv {
namespace {

// gguf_type ids of the value types written here.
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9, kU64 = 10 };

class Buffer {
 public:
  template <typename T>
  void scalar(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  void string(const std::string& s) {
    scalar<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  void pad_to(uint64_t alignment) { bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment, '\0'); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

void put_value(Buffer& out, const GgufValue& value) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, uint32_t>) {
          out.scalar(kU32), out.scalar(v);
        } else if constexpr (std::is_same_v<T, int32_t>) {
          out.scalar(kI32), out.scalar(v);
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          out.scalar(kU64), out.scalar(v);
        } else if constexpr (std::is_same_v<T, float>) {
          out.scalar(kF32), out.scalar(v);
        } else if constexpr (std::is_same_v<T, bool>) {
          out.scalar(kBool), out.scalar(uint8_t(v ? 1 : 0));
        } else if constexpr (std::is_same_v<T, std::string>) {
          out.scalar(kString), out.string(v);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          out.scalar(kArray), out.scalar(kString), out.scalar<uint64_t>(v.size());
          for (const std::string& s : v) out.string(s);
        } else if constexpr (std::is_same_v<T, std::vector<int32_t>>) {
          out.scalar(kArray), out.scalar(kI32), out.scalar<uint64_t>(v.size());
          for (int32_t x : v) out.scalar(x);
        } else {
          static_assert(std::is_same_v<T, std::vector<float>>);
          out.scalar(kArray), out.scalar(kF32), out.scalar<uint64_t>(v.size());
          for (float x : v) out.scalar(x);
        }
      },
      value);
}

}  // namespace

uint32_t ggml_type_id(DType type) {
  switch (type) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q5_0: return 6;
    case DType::Q5_1: return 7;
    case DType::Q8_0: return 8;
    case DType::BF16: return 30;
    case DType::Q4_NL: break;  // this engine's own type: ggml has no such block
  }
  fail("GGUF cannot hold {} tensors (ggml has no such type)", dtype_name(type));
}

void write_gguf(const std::string& path, std::span<const GgufKeyValue> metadata, std::span<const GgufTensor> tensors,
                const GgufWriteOptions& options) {
  const uint64_t align = options.alignment;
  if (align == 0 || (align & (align - 1)) != 0) fail("GGUF alignment {} is not a power of two", align);

  // Everything is checked before the file is created.
  std::set<std::string> keys;
  std::vector<GgufKeyValue> kv(metadata.begin(), metadata.end());
  if (align != 32) kv.push_back({"general.alignment", uint32_t(align)});
  for (const GgufKeyValue& e : kv) {
    if (e.key.empty()) fail("{}: empty GGUF metadata key", path);
    if (!keys.insert(e.key).second) fail("{}: duplicate GGUF metadata key '{}'", path, e.key);
  }
  std::set<std::string> names;
  std::vector<uint64_t> sizes;  // stored bytes of each tensor
  for (const GgufTensor& g : tensors) {
    const TensorInfo& t = g.source;
    if (t.name.empty()) fail("{}: a tensor has an empty name", path);
    if (!names.insert(t.name).second) fail("{}: duplicate tensor '{}'", path, t.name);
    if (t.shape.size() > 4) fail("{}: tensor '{}' has {} dimensions (GGUF allows at most 4)", path, t.name, t.shape.size());
    const int64_t n = t.numel();
    if (n % dtype_traits(t.dtype).block_size != 0 || dtype_bytes(t.dtype, n) != t.nbytes)
      fail("{}: tensor '{}' holds {} bytes, not {} elements of {}", path, t.name, t.nbytes, n, dtype_name(t.dtype));
    if (g.type != t.dtype && is_quantized(g.type))
      fail("{}: tensor '{}' is {} and cannot be written as {} (only float types are converted)", path, t.name,
           dtype_name(t.dtype), dtype_name(g.type));
    // ggml blocks run along the innermost dimension: rows must be whole blocks.
    if (is_quantized(g.type) && (t.shape.empty() || t.shape.back() % dtype_traits(g.type).block_size != 0))
      fail("{}: tensor '{}' is {} but its rows are not whole blocks", path, t.name, dtype_name(g.type));
    sizes.push_back(dtype_bytes(g.type, n));
  }

  Buffer head;
  head.scalar<uint32_t>(0x46554747u);  // "GGUF" read as little-endian
  head.scalar<uint32_t>(3);
  head.scalar<uint64_t>(tensors.size());
  head.scalar<uint64_t>(kv.size());
  for (const GgufKeyValue& e : kv) {
    head.string(e.key);
    put_value(head, e.value);
  }
  uint64_t offset = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensor& g = tensors[i];
    head.string(g.source.name);
    head.scalar<uint32_t>(uint32_t(g.source.shape.size()));
    for (size_t d = g.source.shape.size(); d-- > 0;) head.scalar<uint64_t>(uint64_t(g.source.shape[d]));
    head.scalar<uint32_t>(ggml_type_id(g.type));
    head.scalar<uint64_t>(offset);
    offset += (sizes[i] + align - 1) / align * align;
    total += sizes[i];
  }
  head.pad_to(align);

  AtomicFile file(path);
  file.write(head.bytes().data(), head.bytes().size());
  static const std::vector<char> zeros(1 << 16, '\0');
  size_t done = 0;
  if (options.progress) options.progress(0, total);
  for (size_t i = 0; i < tensors.size(); ++i) {
    convert_in_pieces(tensors[i].source, tensors[i].type, [&](const std::byte* p, size_t n) {
      file.write(p, n);
      done += n;
      if (options.progress) options.progress(done, total);
    });
    for (uint64_t pad = (align - sizes[i] % align) % align; pad > 0;) {
      const size_t n = size_t(std::min<uint64_t>(pad, zeros.size()));
      file.write(zeros.data(), n);
      pad -= n;
    }
  }
  file.commit();
}

}  // namespace rwkv
