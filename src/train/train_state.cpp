#include "train/train_state.h"

#include <xxhash.h>

#include <cstring>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace rwkv::train {
namespace {

constexpr char kMagic[8] = {'R', 'W', 'K', 'V', 'T', 'R', 'N', 'S'};
constexpr uint32_t kVersion = 1;

}  // namespace

std::string train_state_path(const std::string& checkpoint_path) { return checkpoint_path + ".trainstate"; }

void save_train_state(const std::string& path, const TrainState& state) {
  nlohmann::json info = state.info;
  info["arrays"] = nlohmann::json::array();
  for (const auto& [name, values] : state.arrays) info["arrays"].push_back({name, values.size()});
  const std::string text = info.dump();
  XXH64_state_t* h = XXH64_createState();
  XXH64_reset(h, 0);
  AtomicFile out(path);
  auto put = [&](const void* p, size_t n) {
    out.write(p, n);
    XXH64_update(h, p, n);
  };
  put(kMagic, sizeof kMagic);
  put(&kVersion, sizeof kVersion);
  const uint64_t len = text.size();
  put(&len, sizeof len);
  put(text.data(), text.size());
  for (const auto& [name, values] : state.arrays) put(values.data(), values.size() * sizeof(float));
  const uint64_t digest = XXH64_digest(h);
  XXH64_freeState(h);
  out.write(&digest, sizeof digest);
  out.commit();
}

TrainState load_train_state(const std::string& path) {
  const auto file = MappedFile::open(path);
  const auto* p = file->data();
  const size_t size = file->size();
  const size_t head = sizeof kMagic + sizeof(uint32_t) + sizeof(uint64_t);
  if (size < head + 8 || std::memcmp(p, kMagic, sizeof kMagic) != 0)
    fail("{}: not a training state file (RWKVTRNS)", path);
  uint64_t stored;
  std::memcpy(&stored, p + size - 8, 8);
  if (XXH64(p, size - 8, 0) != stored) fail("{}: training state file is corrupted (checksum mismatch)", path);
  uint32_t version;
  std::memcpy(&version, p + sizeof kMagic, 4);
  if (version != kVersion) fail("{}: training state format version {}, expected {}", path, version, kVersion);
  uint64_t len;
  std::memcpy(&len, p + sizeof kMagic + 4, 8);
  if (len > size - head - 8) fail("{}: training state file is truncated", path);
  TrainState state;
  try {
    state.info = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(p + head), len));
    size_t off = head + len;
    for (const auto& entry : state.info.at("arrays")) {
      const std::string name = entry.at(0).get<std::string>();
      const uint64_t count = entry.at(1).get<uint64_t>();
      if (count > (size - 8 - off) / sizeof(float)) fail("{}: training state file is truncated", path);
      std::vector<float>& values = state.arrays[name];
      values.resize(count);
      std::memcpy(values.data(), p + off, count * sizeof(float));
      off += count * sizeof(float);
    }
    if (off != size - 8) fail("{}: training state file has {} unexpected bytes", path, size - 8 - off);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: damaged training state header ({})", path, e.what());
  }
  return state;
}

}  // namespace rwkv::train
