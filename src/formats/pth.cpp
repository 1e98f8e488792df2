#include "formats/pth.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/pickle.h"
#include "formats/zip.h"

namespace rwkv {
namespace {

constexpr size_t kMaxDims = 64;

bool storage_dtype(std::string_view type, DType& out) {
  if (type == "torch.FloatStorage") out = DType::F32;
  else if (type == "torch.HalfStorage") out = DType::F16;
  else if (type == "torch.BFloat16Storage") out = DType::BF16;
  else return false;
  return true;
}

std::string shape_text(const std::vector<int64_t>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); }

class PthReader {
 public:
  PthReader(std::shared_ptr<const MappedFile> file, const std::string& path)
      : file_(std::move(file)), path_(path), zip_(file_->bytes(), path) {}

  TensorArchive read();

 private:
  void add_tensor(TensorArchive& archive, const std::string& name, const TorchTensor& t);

  std::shared_ptr<const MappedFile> file_;
  const std::string& path_;
  ZipReader zip_;
  std::string prefix_;  // "<archive>/"
};

TensorArchive PthReader::read() {
  // torch.save puts every record under one top-level folder, named after the
  // file when it was saved (so any name is possible).
  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : zip_.entries()) {
    const size_t slash = e.name.find('/');
    if (slash == 0 || slash == std::string::npos || e.name.compare(slash, std::string::npos, "/data.pkl") != 0)
      continue;
    if (pkl != nullptr) fail("{}: zip holds more than one data.pkl ('{}' and '{}')", path_, pkl->name, e.name);
    pkl = &e;
    prefix_ = e.name.substr(0, slash + 1);
  }
  if (pkl == nullptr) fail("{}: zip has no <archive>/data.pkl, so it is not a torch.save checkpoint", path_);
  if (const ZipEntry* order = zip_.find(prefix_ + "byteorder")) {  // written by torch >= 2.1
    const auto b = zip_.read(*order);
    const std::string_view text(reinterpret_cast<const char*>(b.data()), b.size());
    if (text != "little") fail("{}: byteorder '{}' is not supported (only little-endian)", path_, text.substr(0, 16));
  }

  // The pickle is small; checking its CRC catches a damaged file early.
  zip_.verify_crc(*pkl);
  const Unpickled pickle = unpickle(zip_.read(*pkl), fmt::format("{}: {}", path_, pkl->name));
  const PickleValue& root = pickle.root();
  if (root.kind != PickleKind::Dict)
    fail("{}: top-level object is a {}, not a dict of tensors", path_, pickle_kind_name(root.kind));

  TensorArchive archive;
  archive.format = "pth";
  archive.path = path_;
  archive.keep_alive(file_);
  for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
    const PickleValue& key = *root.items[i];
    const PickleValue& value = *root.items[i + 1];
    if (key.kind != PickleKind::String)
      fail("{}: state dict key #{} is a {}, not a str", path_, i / 2, pickle_kind_name(key.kind));
    if (value.kind != PickleKind::Tensor)
      fail("{}: '{}' is a {}, not a tensor", path_, key.text, pickle_kind_name(value.kind));
    add_tensor(archive, key.text, *value.tensor);
  }
  return archive;
}

void PthReader::add_tensor(TensorArchive& archive, const std::string& name, const TorchTensor& t) {
  const TorchStorage& s = *t.storage;
  TensorInfo info;
  info.name = name;
  if (!storage_dtype(s.type, info.dtype))
    fail("{}: tensor '{}' has unsupported storage type {} (only float32, float16 and bfloat16 are supported)",
         path_, name, s.type);
  const int64_t esize = int64_t(dtype_size(info.dtype));

  if (t.shape.size() > kMaxDims) fail("{}: tensor '{}' has {} dimensions", path_, name, t.shape.size());
  if (t.storage_offset < 0) fail("{}: tensor '{}' has a negative storage offset {}", path_, name, t.storage_offset);
  int64_t numel = 1;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (t.shape[d] < 0 || t.stride[d] < 0)
      fail("{}: tensor '{}' has a negative size or stride (shape {}, stride {})", path_, name,
           shape_text(t.shape), shape_text(t.stride));
    if (__builtin_mul_overflow(numel, t.shape[d], &numel) || numel > INT64_MAX / esize)
      fail("{}: tensor '{}' of shape {} is too large", path_, name, shape_text(t.shape));
  }
  info.shape = t.shape;
  info.nbytes = size_t(numel * esize);

  const std::string entry_name = prefix_ + "data/" + s.key;
  const ZipEntry* entry = zip_.find(entry_name);
  if (entry == nullptr)
    fail("{}: tensor '{}' uses storage '{}', but the zip has no entry '{}' (missing storage)", path_, name,
         s.key, entry_name);
  if (s.numel > int64_t(entry->uncompressed_size / uint64_t(esize)))
    fail("{}: storage '{}' of tensor '{}' claims {} elements of {} bytes but its entry holds {} bytes", path_,
         s.key, name, s.numel, esize, entry->uncompressed_size);

  // The last element read is storage_offset + sum((size - 1) * stride); it
  // must lie inside the storage.
  if (numel > 0) {
    int64_t last = t.storage_offset;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      int64_t step;
      if (__builtin_mul_overflow(t.shape[d] - 1, t.stride[d], &step) || __builtin_add_overflow(last, step, &last))
        fail("{}: tensor '{}' has strides that overflow", path_, name);
    }
    if (last >= s.numel)
      fail("{}: tensor '{}' (shape {}, stride {}, offset {}) exceeds its storage '{}' of {} elements", path_,
           name, shape_text(t.shape), shape_text(t.stride), t.storage_offset, s.key, s.numel);
  } else {
    info.data = archive.own(0);
    archive.add(std::move(info));
    return;
  }

  bool contiguous = true;
  int64_t expected = 1;
  for (size_t d = t.shape.size(); d-- > 0;) {
    if (t.shape[d] != 1 && t.stride[d] != expected) contiguous = false;
    expected *= t.shape[d];
  }

  const std::span<const std::byte> storage = zip_.read(*entry);
  const std::byte* src = storage.data() + t.storage_offset * esize;
  if (entry->method == ZipReader::kStored && contiguous && reinterpret_cast<uintptr_t>(src) % uintptr_t(esize) == 0) {
    info.data = src;  // zero copy: the archive keeps the mapping alive
    archive.add(std::move(info));
    return;
  }

  std::byte* dst = archive.own(info.nbytes);
  if (contiguous) {
    std::memcpy(dst, src, info.nbytes);
  } else {
    // Row-major walk: the innermost dimension in a loop, the others as an
    // odometer; offsets stay within the storage as checked above.
    const size_t nd = t.shape.size();  // >= 1: a 0-d tensor is contiguous
    const int64_t inner = t.shape[nd - 1], inner_stride = t.stride[nd - 1];
    std::vector<int64_t> index(nd, 0);
    int64_t base = 0;
    std::byte* out = dst;
    for (int64_t row = 0, rows = numel / inner; row < rows; ++row) {
      for (int64_t i = 0; i < inner; ++i, out += esize) std::memcpy(out, src + (base + i * inner_stride) * esize, size_t(esize));
      for (size_t d = nd - 1; d-- > 0;) {
        base += t.stride[d];
        if (++index[d] < t.shape[d]) break;
        base -= t.stride[d] * t.shape[d];
        index[d] = 0;
      }
    }
  }
  info.data = dst;
  archive.add(std::move(info));
}

}  // namespace

bool is_zip(std::span<const std::byte> head) {
  if (head.size() < 4 || head[0] != std::byte{'P'} || head[1] != std::byte{'K'}) return false;
  return (head[2] == std::byte{3} && head[3] == std::byte{4}) ||  // local file header
         (head[2] == std::byte{5} && head[3] == std::byte{6});    // empty archive
}

TensorArchive read_pth(const std::string& path) {
  auto file = MappedFile::open(path);
  if (!is_zip(file->bytes())) {
    // torch < 1.6 (or _use_new_zipfile_serialization=False) wrote a bare
    // pickle stream starting with PROTO 2.
    if (file->size() >= 2 && file->data()[0] == std::byte{0x80} && file->data()[1] == std::byte{0x02})
      fail("{}: legacy non-zip torch.save format (torch < 1.6) is not supported; re-save it with a newer torch",
           path);
    fail("{}: not a zip-format PyTorch checkpoint (bad magic)", path);
  }
  return PthReader(file, path).read();
}

}  // namespace rwkv
