// The recurrent state of one sequence: everything the model carries from one
// token to the next. Its size is fixed per model, whatever the context length.
// A State is a plain value: copying it forks the sequence.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"

namespace rwkv {

// Identifies the models a state fits: same architecture and shapes.
struct StateShape {
  Arch arch = Arch::V7;
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;
  uint32_t n_head = 0;
  uint32_t head_size = 0;
  uint32_t n_vocab = 0;

  bool operator==(const StateShape&) const = default;
};

class State {
 public:
  State() = default;
  State(StateShape shape, size_t n_floats) : shape_(shape), data_(n_floats, 0.0f) {}

  const StateShape& shape() const { return shape_; }
  std::span<float> data() { return data_; }
  std::span<const float> data() const { return data_; }
  size_t size() const { return data_.size(); }
  bool empty() const { return data_.empty(); }

  bool operator==(const State&) const = default;

 private:
  StateShape shape_;
  std::vector<float> data_;
};

}  // namespace rwkv
