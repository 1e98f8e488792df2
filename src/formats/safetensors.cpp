#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "formats/pth_writer.h"

namespace rwkv {
namespace {

using Json = nlohmann::ordered_json;

// The safetensors library refuses headers over 100 MB; so do we, before reading one.
constexpr uint64_t kMaxHeader = 100'000'000;
constexpr size_t kAlign = 64;

const char* st_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    default: return nullptr;
  }
}

bool st_dtype(std::string_view name, DType& out) {
  if (name == "F32") out = DType::F32;
  else if (name == "F16") out = DType::F16;
  else if (name == "BF16") out = DType::BF16;
  else return false;
  return true;
}

uint64_t le64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | uint64_t(p[i]);
  return v;
}

// A non-negative integer that fits int64, or an error naming `what`.
int64_t json_size(const Json& v, const std::string& path, const std::string& what) {
  if (v.is_number_unsigned() && v.get<uint64_t>() <= uint64_t(INT64_MAX)) return int64_t(v.get<uint64_t>());
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  fail("{}: {} is {}, not a non-negative integer", path, what, v.dump());
}

}  // namespace

bool is_safetensors(std::span<const std::byte> head, uint64_t file_size) {
  if (head.size() < 9 || file_size < 9) return false;
  const uint64_t n = le64(head.data());
  return n >= 2 && n <= file_size - 8 && head[8] == std::byte{'{'};
}

TensorArchive read_safetensors(const std::string& path) {
  auto file = MappedFile::open(path);
  TensorArchive archive;
  archive.format = "safetensors";
  archive.path = path;
  archive.keep_alive(file);

  const uint64_t size = file->size();
  if (size < 8) fail("{}: file is truncated: {} bytes is shorter than the 8-byte safetensors header length", path, size);
  const uint64_t n = le64(file->data());
  if (n > size - 8)
    fail("{}: header claims {} bytes but only {} follow (truncated, or not a safetensors file)", path, n, size - 8);
  if (n > kMaxHeader) fail("{}: header of {} bytes is larger than the {}-byte limit", path, n, kMaxHeader);
  const std::string_view text(reinterpret_cast<const char*>(file->data() + 8), size_t(n));
  const uint64_t data_start = 8 + n, data_size = size - data_start;

  // Duplicate names would silently overwrite each other in a JSON object:
  // catch them while parsing (depth 1 keys are the tensor names).
  std::set<std::string> seen;
  std::string duplicate;
  Json header;
  try {
    header = Json::parse(text, [&](int depth, Json::parse_event_t event, Json& parsed) {
      if (depth == 1 && event == Json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second &&
          duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON (truncated or not a safetensors file): {}", path, e.what());
  }
  if (!duplicate.empty()) fail("{}: duplicate tensor '{}' in the header", path, duplicate);
  if (!header.is_object()) fail("{}: header is a JSON {}, not an object", path, header.type_name());

  std::vector<std::pair<uint64_t, uint64_t>> extents;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ is not an object", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("{}: __metadata__ entry '{}' is not a string", path, m.key());
        archive.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail("{}: header entry '{}' is not {{dtype, shape, data_offsets}}", path, name);
    const Json& dt = v["dtype"];
    const Json& shape = v["shape"];
    const Json& offsets = v["data_offsets"];
    if (!dt.is_string()) fail("{}: tensor '{}' has a dtype that is not a string", path, name);
    TensorInfo info;
    info.name = name;
    if (!st_dtype(dt.get<std::string>(), info.dtype))
      fail("{}: tensor '{}' has dtype {}; only F32, F16 and BF16 are supported", path, name, dt.get<std::string>());
    if (!shape.is_array() || shape.size() > 64) fail("{}: tensor '{}' has a bad shape {}", path, name, shape.dump());
    int64_t numel = 1;
    for (const Json& d : shape) {
      const int64_t x = json_size(d, path, "a dimension of '" + name + "'");
      if (__builtin_mul_overflow(numel, x, &numel) || uint64_t(numel) > size)
        fail("{}: tensor '{}' of shape {} is larger than the file", path, name, shape.dump());
      info.shape.push_back(x);
    }
    if (!offsets.is_array() || offsets.size() != 2)
      fail("{}: tensor '{}' has data_offsets {}, not [begin, end]", path, name, offsets.dump());
    const uint64_t begin = uint64_t(json_size(offsets[0], path, "data_offsets of '" + name + "'"));
    const uint64_t end = uint64_t(json_size(offsets[1], path, "data_offsets of '" + name + "'"));
    info.nbytes = size_t(uint64_t(numel) * dtype_size(info.dtype));
    if (end < begin || end - begin != info.nbytes)
      fail("{}: tensor '{}' has data_offsets [{}, {}] but its shape {} needs {} bytes", path, name, begin, end,
           shape.dump(), info.nbytes);
    if (end > data_size)
      fail("{}: tensor '{}' (bytes {}..{} of the data) lies outside the file's {} data bytes (truncated?)", path, name,
           begin, end, data_size);
    if (info.nbytes != 0) extents.emplace_back(begin, end);
    const std::byte* src = file->data() + data_start + begin;
    if (info.nbytes == 0) {
      info.data = archive.own(0);
    } else if (reinterpret_cast<uintptr_t>(src) % dtype_size(info.dtype) == 0) {
      info.data = src;  // zero copy
    } else {  // a writer that did not align: copy once for aligned kernels
      std::byte* copy = archive.own(info.nbytes);
      std::memcpy(copy, src, info.nbytes);
      info.data = copy;
    }
    archive.add(std::move(info));
  }
  // Like the safetensors library: the data is covered exactly, without
  // overlaps or holes, so no byte is shared or unaccounted for.
  std::sort(extents.begin(), extents.end());
  uint64_t covered = 0;
  for (const auto& [begin, end] : extents) {
    if (begin < covered) fail("{}: tensors overlap in the data (at data offset {})", path, begin);
    if (begin > covered) fail("{}: the data has a hole of {} bytes at data offset {}", path, begin - covered, covered);
    covered = end;
  }
  if (covered != data_size)
    fail("{}: {} bytes after the last tensor belong to no tensor (damaged file?)", path, data_size - covered);
  return archive;
}

void write_safetensors(const std::string& path, std::span<const TensorInfo> tensors,
                       const SafetensorsWriteOptions& options) {
  std::set<std::string_view> names;
  size_t total = 0;
  for (const TensorInfo& t : tensors) {
    if (t.name == "__metadata__") fail("{}: a tensor may not be named '__metadata__'", path);
    if (!names.insert(t.name).second) fail("{}: duplicate tensor name '{}'", path, t.name);
    if (st_dtype_name(options.dtype.value_or(t.dtype)) == nullptr)
      fail("{}: tensor '{}' is {}; safetensors files here hold only f32, f16 and bf16 (see --dtype)", path, t.name,
           dtype_name(t.dtype));
    int64_t numel = 1;
    for (int64_t d : t.shape)
      if (d < 0 || __builtin_mul_overflow(numel, d, &numel)) fail("{}: tensor '{}' has an invalid shape", path, t.name);
    if (dtype_bytes(t.dtype, numel) != t.nbytes)
      fail("{}: tensor '{}' holds {} bytes, its shape needs {}", path, t.name, t.nbytes, dtype_bytes(t.dtype, numel));
    if (t.nbytes != 0 && t.data == nullptr) fail("{}: tensor '{}' has no data", path, t.name);
  }
  auto out_dtype = [&](const TensorInfo& t) { return options.dtype.value_or(t.dtype); };
  auto out_bytes = [&](const TensorInfo& t) { return size_t(t.numel()) * dtype_size(out_dtype(t)); };
  for (const TensorInfo& t : tensors) total += out_bytes(t);

  // Widest elements first: each tensor then starts at a multiple of its size.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(out_dtype(tensors[a])) > dtype_size(out_dtype(tensors[b]));
  });
  std::vector<uint64_t> begin(tensors.size());
  uint64_t offset = 0;
  for (size_t i : order) {
    begin[i] = offset;
    offset += out_bytes(tensors[i]);
  }

  std::string text;
  try {
    Json header = Json::object();
    if (!options.metadata.empty()) header["__metadata__"] = options.metadata;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorInfo& t = tensors[i];
      header[t.name] = {{"dtype", st_dtype_name(out_dtype(t))},
                        {"shape", t.shape},
                        {"data_offsets", {begin[i], begin[i] + out_bytes(t)}}};
    }
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: cannot write the header (names and metadata must be valid UTF-8): {}", path, e.what());
  }
  text.append((kAlign - (8 + text.size()) % kAlign) % kAlign, ' ');

  AtomicFile file(path);
  std::byte len[8];
  for (int i = 0; i < 8; ++i) len[i] = std::byte(uint8_t(uint64_t(text.size()) >> (8 * i)));
  file.write(len, 8);
  file.write(text.data(), text.size());
  size_t done = 0;
  for (size_t i : order) {
    convert_in_pieces(tensors[i], out_dtype(tensors[i]), [&](const std::byte* p, size_t n) {
      file.write(p, n);
      done += n;
      if (options.progress) options.progress(done, total);
    });
  }
  if (options.progress && total == 0) options.progress(0, 0);
  file.commit();
}

}  // namespace rwkv
