#include "runtime/state_file.h"

#include <xxhash.h>

#include <cstring>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace rwkv {
namespace {

constexpr char kMagic[8] = {'R', 'W', 'K', 'V', 'S', 'T', 'A', 'T'};
constexpr size_t kMaxSectionName = 256;

void put(std::vector<std::byte>& out, const void* p, size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  out.insert(out.end(), b, b + n);
}
template <typename T>
void put_value(std::vector<std::byte>& out, T v) {
  put(out, &v, sizeof v);
}

class Reader {
 public:
  Reader(const std::byte* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  const std::byte* take(size_t n, const char* what) {
    if (n > n_ - off_) fail("{}: state file is truncated (reading {} at offset {})", path_, what, off_);
    const std::byte* r = p_ + off_;
    off_ += n;
    return r;
  }
  template <typename T>
  T value(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof v, what), sizeof v);
    return v;
  }
  size_t remaining() const { return n_ - off_; }

 private:
  const std::byte* p_;
  size_t n_;
  size_t off_ = 0;
  const std::string& path_;
};

}  // namespace

std::string describe(const StateShape& s) {
  return fmt::format("RWKV arch {} with {} layers, n_embd {}, {} heads of size {}, vocabulary {}",
                     arch_name(s.arch), s.n_layer, s.n_embd, s.n_head, s.head_size, s.n_vocab);
}

void save_state_file(const std::string& path, const StateFile& file) {
  std::vector<std::byte> out;
  const StateShape& s = file.state.shape();
  put(out, kMagic, sizeof kMagic);
  put_value<uint32_t>(out, kStateFileVersion);
  for (uint32_t v : {uint32_t(s.arch), s.n_layer, s.n_embd, s.n_head, s.head_size, s.n_vocab}) put_value(out, v);
  put_value<uint64_t>(out, file.state.size());
  put(out, file.state.data().data(), file.state.size() * sizeof(float));
  put_value<uint32_t>(out, uint32_t(file.sections.size()));
  for (const auto& [name, bytes] : file.sections) {
    put_value<uint32_t>(out, uint32_t(name.size()));
    put(out, name.data(), name.size());
    put_value<uint64_t>(out, bytes.size());
    put(out, bytes.data(), bytes.size());
  }
  put_value<uint64_t>(out, XXH64(out.data(), out.size(), 0));
  AtomicFile writer(path);
  writer.write(out.data(), out.size());
  writer.commit();
}

StateFile load_state_file(const std::string& path, const StateShape& expected, size_t expected_floats) {
  auto mapped = MappedFile::open(path);
  const size_t size = mapped->size();
  if (size < sizeof kMagic || std::memcmp(mapped->data(), kMagic, sizeof kMagic) != 0)
    fail("{}: not an RWKV state file (wrong magic)", path);
  if (size < sizeof kMagic + 8) fail("{}: state file is truncated", path);
  uint64_t stored_hash;
  std::memcpy(&stored_hash, mapped->data() + size - 8, 8);

  Reader in(mapped->data(), size - 8, path);
  in.take(sizeof kMagic, "magic");
  const auto version = in.value<uint32_t>("version");
  if (version != kStateFileVersion)
    fail("{}: state file version {} is not supported (this build reads version {})", path, version, kStateFileVersion);
  if (XXH64(mapped->data(), size - 8, 0) != stored_hash) fail("{}: state file is corrupted (checksum mismatch)", path);

  StateShape shape;
  shape.arch = Arch(in.value<uint32_t>("shape"));
  shape.n_layer = in.value<uint32_t>("shape");
  shape.n_embd = in.value<uint32_t>("shape");
  shape.n_head = in.value<uint32_t>("shape");
  shape.head_size = in.value<uint32_t>("shape");
  shape.n_vocab = in.value<uint32_t>("shape");
  if (!(shape == expected))
    fail("{}: the state was saved for another model ({}); this model is {}", path, describe(shape), describe(expected));
  const auto n_floats = in.value<uint64_t>("state size");
  if (n_floats != expected_floats)
    fail("{}: the state holds {} floats, this model's state has {}", path, n_floats, expected_floats);
  if (n_floats > in.remaining() / sizeof(float)) fail("{}: state file is truncated (state data)", path);
  StateFile file;
  file.state = State(shape, size_t(n_floats));
  std::memcpy(file.state.data().data(), in.take(size_t(n_floats) * sizeof(float), "state data"),
              size_t(n_floats) * sizeof(float));
  const auto n_sections = in.value<uint32_t>("section count");
  for (uint32_t i = 0; i < n_sections; ++i) {
    const auto name_len = in.value<uint32_t>("section name");
    if (name_len > kMaxSectionName) fail("{}: state file section name too long ({} bytes)", path, name_len);
    const auto* name = in.take(name_len, "section name");
    const auto len = in.value<uint64_t>("section size");
    if (len > in.remaining()) fail("{}: state file is truncated (section data)", path);
    const auto* bytes = in.take(size_t(len), "section data");
    file.sections[std::string(reinterpret_cast<const char*>(name), name_len)] =
        std::vector<std::byte>(bytes, bytes + len);
  }
  if (in.remaining() != 0) fail("{}: state file has {} unexpected trailing bytes", path, in.remaining());
  return file;
}

}  // namespace rwkv
