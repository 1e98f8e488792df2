#include "formats/pth_writer.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"

namespace rwkv {
namespace {

constexpr uint64_t kMax32 = 0xffffffffu;
constexpr size_t kAlign = 64;                 // torch aligns record data to 64 bytes
constexpr size_t kChunk = size_t(64) << 20;   // write (and report progress) in 64 MiB pieces

void put16(std::vector<uint8_t>& b, uint64_t v) {
  for (int i = 0; i < 2; ++i) b.push_back(uint8_t(v >> (8 * i)));
}
void put32(std::vector<uint8_t>& b, uint64_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(uint8_t(v >> (8 * i)));
}

// --- pickle (protocol 2) ------------------------------------------------------------

class PickleWriter {
 public:
  std::vector<uint8_t> out;

  void op(uint8_t code) { out.push_back(code); }
  void global(std::string_view module, std::string_view name) {
    op('c');
    out.insert(out.end(), module.begin(), module.end());
    op('\n');
    out.insert(out.end(), name.begin(), name.end());
    op('\n');
  }
  void string(std::string_view s) {
    op('X');  // BINUNICODE: 4-byte length, UTF-8 bytes
    put32(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      out.push_back(uint8_t(v));
    } else if (v >= 0 && v < 65536) {
      op('M');
      put16(out, uint64_t(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      put32(out, uint64_t(v));
    } else {
      op(0x8a);  // LONG1: little-endian two's complement; 8 bytes always suffice
      out.push_back(8);
      put64(out, uint64_t(v));
    }
  }
  void int_tuple(const std::vector<int64_t>& v) {
    if (v.empty()) {
      op(')');
      return;
    }
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
};

const char* storage_name(DType t) {
  switch (t) {
    case DType::F32: return "FloatStorage";
    case DType::F16: return "HalfStorage";
    case DType::BF16: return "BFloat16Storage";
    default: return nullptr;  // block-quantized types have no torch storage
  }
}

// An OrderedDict of _rebuild_tensor_v2(storage, 0, shape, contiguous stride,
// False, OrderedDict()), tensor i stored under key "i": what torch.save writes.
std::vector<uint8_t> state_dict_pickle(std::span<const TensorInfo> tensors, std::optional<DType> dtype) {
  PickleWriter p;
  p.op(0x80);  // PROTO 2
  p.op(2);
  p.global("collections", "OrderedDict");
  p.op(')');
  p.op('R');
  p.op('(');  // MARK for SETITEMS
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    p.string(t.name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');  // arguments
    p.op('(');  // persistent id
    p.string("storage");
    p.global("torch", storage_name(dtype.value_or(t.dtype)));
    p.string(std::to_string(i));
    p.string("cpu");
    p.integer(t.numel());
    p.op('t');
    p.op('Q');  // BINPERSID
    p.integer(0);
    p.int_tuple(t.shape);
    std::vector<int64_t> stride(t.shape.size());
    int64_t s = 1;
    for (size_t d = t.shape.size(); d-- > 0;) {
      stride[d] = s;
      s *= std::max<int64_t>(t.shape[d], 1);
    }
    p.int_tuple(stride);
    p.op(0x89);  // NEWFALSE: requires_grad
    p.global("collections", "OrderedDict");
    p.op(')');
    p.op('R');
    p.op('t');
    p.op('R');
  }
  p.op('u');  // SETITEMS
  p.op('.');
  return std::move(p.out);
}

// --- zip ------------------------------------------------------------------------------

struct Record {
  std::string name;
  uint64_t size;
  uint64_t offset = 0;  // of the local header
  uint32_t crc = 0;
  bool zip64 = false;
};

class ZipWriter {
 public:
  ZipWriter(AtomicFile& file, bool force_zip64) : file_(file), force64_(force_zip64) {}

  // Writes one STORED record of `size` bytes with its data 64-byte aligned;
  // `produce(sink)` must pass exactly those bytes to sink, in pieces.
  template <typename F>
  void add(std::string name, uint64_t size, F produce) {
    Record r{std::move(name), size};
    r.offset = pos_;
    r.zip64 = force64_ || size >= kMax32;
    std::vector<uint8_t> h;
    put32(h, 0x04034b50);
    put16(h, r.zip64 ? 45 : 20);  // version needed
    put16(h, 0x0808);             // data descriptor follows; UTF-8 name
    put16(h, 0);                  // STORED
    put32(h, 0);                  // time, date
    put32(h, 0);                  // crc: in the descriptor
    put32(h, r.zip64 ? kMax32 : 0);
    put32(h, r.zip64 ? kMax32 : 0);
    put16(h, r.name.size());
    const size_t extra64 = r.zip64 ? 20 : 0;
    // Pad with an extra field (id "FB", as torch does) so the data starts at a
    // multiple of 64; an extra field needs at least its 4-byte header.
    const uint64_t unpadded = pos_ + 30 + r.name.size() + extra64 + 4;
    const size_t pad = size_t((kAlign - unpadded % kAlign) % kAlign);
    put16(h, extra64 + 4 + pad);
    h.insert(h.end(), r.name.begin(), r.name.end());
    if (r.zip64) {
      put16(h, 0x0001);
      put16(h, 16);
      put64(h, 0);
      put64(h, 0);
    }
    put16(h, 0x4246);
    put16(h, pad);
    h.insert(h.end(), pad, uint8_t('Z'));
    write(h.data(), h.size());

    uLong crc = crc32(0L, Z_NULL, 0);
    uint64_t written = 0;
    produce([&](const std::byte* p, size_t n) {
      crc = crc32(crc, reinterpret_cast<const Bytef*>(p), uInt(n));  // n <= kChunk < 4 GiB
      write(p, n);
      written += n;
    });
    if (written != size) fail("internal error: record '{}' produced {} of {} bytes", r.name, written, size);
    r.crc = uint32_t(crc);

    std::vector<uint8_t> d;
    put32(d, 0x08074b50);
    put32(d, r.crc);
    if (r.zip64) {
      put64(d, size);
      put64(d, size);
    } else {
      put32(d, size);
      put32(d, size);
    }
    write(d.data(), d.size());
    records_.push_back(std::move(r));
  }

  void finish() {
    const uint64_t cd_offset = pos_;
    std::vector<uint8_t> c;
    for (const Record& r : records_) {
      const bool big_size = force64_ || r.size >= kMax32;
      const bool big_offset = force64_ || r.offset >= kMax32;
      put32(c, 0x02014b50);
      put16(c, 45);  // made by: ZIP 4.5 (ZIP64), MS-DOS attributes
      put16(c, (big_size || big_offset) ? 45 : 20);
      put16(c, 0x0808);
      put16(c, 0);
      put32(c, 0);
      put32(c, r.crc);
      put32(c, big_size ? kMax32 : r.size);
      put32(c, big_size ? kMax32 : r.size);
      put16(c, r.name.size());
      const size_t extra = (big_size ? 16 : 0) + (big_offset ? 8 : 0);
      put16(c, extra == 0 ? 0 : extra + 4);
      put16(c, 0);  // comment
      put16(c, 0);  // disk
      put16(c, 0);  // internal attributes
      put32(c, 0);  // external attributes
      put32(c, big_offset ? kMax32 : r.offset);
      c.insert(c.end(), r.name.begin(), r.name.end());
      if (extra != 0) {
        put16(c, 0x0001);
        put16(c, extra);
        if (big_size) {
          put64(c, r.size);
          put64(c, r.size);
        }
        if (big_offset) put64(c, r.offset);
      }
    }
    write(c.data(), c.size());
    const uint64_t cd_size = c.size(), count = records_.size();
    const bool end64 = force64_ || cd_offset >= kMax32 || cd_size >= kMax32 || count >= 0xffff;
    std::vector<uint8_t> e;
    if (end64) {
      const uint64_t rec = pos_;
      put32(e, 0x06064b50);
      put64(e, 44);  // size of the rest of this record
      put16(e, 45);
      put16(e, 45);
      put32(e, 0);
      put32(e, 0);
      put64(e, count);
      put64(e, count);
      put64(e, cd_size);
      put64(e, cd_offset);
      put32(e, 0x07064b50);  // locator
      put32(e, 0);
      put64(e, rec);
      put32(e, 1);
    }
    put32(e, 0x06054b50);
    put16(e, 0);
    put16(e, 0);
    put16(e, end64 ? 0xffff : count);
    put16(e, end64 ? 0xffff : count);
    put32(e, end64 ? kMax32 : cd_size);
    put32(e, end64 ? kMax32 : cd_offset);
    put16(e, 0);
    write(e.data(), e.size());
  }

 private:
  void write(const void* p, size_t n) {
    file_.write(p, n);
    pos_ += n;
  }
  AtomicFile& file_;
  bool force64_;
  uint64_t pos_ = 0;
  std::vector<Record> records_;
};

}  // namespace

void convert_in_pieces(const TensorInfo& t, DType to, const std::function<void(const std::byte*, size_t)>& sink) {
  if (to == t.dtype) {
    for (size_t at = 0; at < t.nbytes; at += kChunk) sink(t.data + at, std::min(kChunk, t.nbytes - at));
    return;
  }
  if (is_quantized(to)) fail("cannot convert tensor '{}' to {}", t.name, dtype_name(to));
  // Pieces of whole quantization blocks (32 elements) when the source is quantized.
  const size_t per_piece = kChunk / 4;  // elements: the widened floats fill one piece
  const size_t n = size_t(t.numel()), out_size = dtype_size(to);
  if (dtype_bytes(t.dtype, int64_t(n)) != t.nbytes)
    fail("tensor '{}' holds {} bytes, not {} elements of {}", t.name, t.nbytes, n, dtype_name(t.dtype));
  std::vector<float> wide(std::min(n, per_piece));
  std::vector<std::byte> narrow(wide.size() * out_size);
  for (size_t at = 0; at < n; at += per_piece) {
    const size_t k = std::min(per_piece, n - at);
    convert_to_f32(t.dtype, t.data + dtype_bytes(t.dtype, int64_t(at)), wide.data(), k);
    if (to == DType::F32) {
      std::memcpy(narrow.data(), wide.data(), 4 * k);
    } else {
      for (size_t i = 0; i < k; ++i) {
        const uint16_t h = to == DType::F16 ? f32_to_f16(wide[i]) : f32_to_bf16(wide[i]);
        std::memcpy(narrow.data() + 2 * i, &h, 2);
      }
    }
    sink(narrow.data(), k * out_size);
  }
}

namespace {

std::string default_archive_name(const std::string& path) {
  std::string name;
  for (char ch : std::filesystem::path(path).stem().string())
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-')
      name += ch;
  return name.empty() ? "archive" : name;
}

}  // namespace

void write_pth(const std::string& path, std::span<const TensorInfo> tensors, const PthWriteOptions& options) {
  std::set<std::string_view> names;
  for (const TensorInfo& t : tensors) {
    if (!names.insert(t.name).second) fail("{}: duplicate tensor name '{}'", path, t.name);
    if (storage_name(options.dtype.value_or(t.dtype)) == nullptr)
      fail("{}: tensor '{}' is {}, which a .pth cannot hold (only f32, f16 and bf16; see --dtype)", path, t.name,
           dtype_name(t.dtype));
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(numel, d, &numel)) fail("{}: tensor '{}' has an invalid shape", path, t.name);
    }
    if (dtype_bytes(t.dtype, numel) != t.nbytes)
      fail("{}: tensor '{}' holds {} bytes, its shape needs {}", path, t.name, t.nbytes, dtype_bytes(t.dtype, numel));
    if (t.nbytes != 0 && t.data == nullptr) fail("{}: tensor '{}' has no data", path, t.name);
  }
  const std::string folder = options.archive_name.empty() ? default_archive_name(path) : options.archive_name;
  for (char ch : folder)
    if (ch == '/' || ch == '\0') fail("archive name '{}' may not contain '/'", folder);

  size_t out_total = 0;
  for (const TensorInfo& t : tensors) out_total += size_t(t.numel()) * dtype_size(options.dtype.value_or(t.dtype));

  AtomicFile file(path);
  ZipWriter zip(file, options.force_zip64);
  auto bytes = [](const void* p, size_t n) {
    return [p, n](const auto& sink) {
      if (n != 0) sink(static_cast<const std::byte*>(p), n);
    };
  };
  const std::vector<uint8_t> pickle = state_dict_pickle(tensors, options.dtype);
  zip.add(folder + "/data.pkl", pickle.size(), bytes(pickle.data(), pickle.size()));
  zip.add(folder + "/byteorder", 6, bytes("little", 6));
  size_t done = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    const DType to = options.dtype.value_or(t.dtype);
    zip.add(folder + "/data/" + std::to_string(i), size_t(t.numel()) * dtype_size(to), [&](const auto& sink) {
      convert_in_pieces(t, to, [&](const std::byte* p, size_t n) {
        sink(p, n);
        done += n;
        if (options.progress) options.progress(done, out_total);
      });
    });
    if (options.progress && t.nbytes == 0) options.progress(done, out_total);
  }
  // torch writes the format version as "3\n" and reads it as an integer.
  zip.add(folder + "/version", 2, bytes("3\n", 2));
  zip.finish();
  file.commit();
}

}  // namespace rwkv
