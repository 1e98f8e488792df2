// State files: a sequence's recurrent state (plus optional named sections,
// e.g. the last logits) saved so a session can be paused and resumed
// bit-exactly.
//
// Layout (little-endian):
//   char[8]  magic "RWKVSTAT"
//   u32      format version (1)
//   u32      arch, n_layer, n_embd, n_head, head_size, n_vocab   (model shape)
//   u64      n_floats, then f32[n_floats] state
//   u32      n_sections, then per section: u32 name length, name bytes,
//            u64 byte length, bytes
//   u64      XXH64 (seed 0) of every byte before it
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "model/state.h"

namespace rwkv {

constexpr uint32_t kStateFileVersion = 1;

struct StateFile {
  State state;
  std::map<std::string, std::vector<std::byte>> sections;
};

// Writes atomically: the target is replaced only once the whole file is written.
void save_state_file(const std::string& path, const StateFile& file);

// Reads and verifies a state file; fails with a clear error if it is damaged or
// was made for a model of another shape than `expected` (with a state of
// `expected_floats` floats).
StateFile load_state_file(const std::string& path, const StateShape& expected, size_t expected_floats);

std::string describe(const StateShape& shape);

}  // namespace rwkv
