// The companion of a training checkpoint (OUT.pth -> OUT.pth.trainstate):
// everything --resume needs to continue a run exactly where it stopped.
//
// Layout (little-endian):
//   char[8] magic "RWKVTRNS", u32 format version (1),
//   u64 JSON length, JSON (run settings, step, sample counter, loss history,
//   and the name and length of each array that follows),
//   f32 arrays (fp32 master weights, AdamW moments, ...),
//   u64 XXH64 (seed 0) of every byte before it.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace rwkv::train {

struct TrainState {
  nlohmann::json info;
  std::map<std::string, std::vector<float>> arrays;
};

std::string train_state_path(const std::string& checkpoint_path);

// Atomic (temporary file + rename).
void save_train_state(const std::string& path, const TrainState& state);
// Fails with a clear error for a missing, truncated or corrupted file.
TrainState load_train_state(const std::string& path);

}  // namespace rwkv::train
