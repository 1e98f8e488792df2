// The interface every RWKV version implements. A Model holds immutable
// weights and may be shared between threads; everything that changes while
// running (recurrent state, scratch buffers) belongs to the caller.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "model/config.h"
#include "model/state.h"

namespace rwkv {

enum class Logits { None, Last, All };

// Scratch memory for forward passes, reused across calls by one caller.
class Workspace {
 public:
  virtual ~Workspace() = default;
};

class Model {
 public:
  virtual ~Model() = default;

  const ModelConfig& config() const { return config_; }
  StateShape state_shape() const;
  // Floats in one sequence's state.
  virtual size_t state_size() const = 0;
  // A fresh (all-zero) state for one sequence.
  State new_state() const { return State(state_shape(), state_size()); }
  virtual std::unique_ptr<Workspace> new_workspace() const = 0;

  // Feeds `tokens` (one sequence, in order) and advances `state`. With one
  // token this is the RNN step; with more, the sequence ("GPT") mode that
  // does the projections as matrix-matrix products over all tokens.
  // `logits` receives n_vocab floats (Logits::Last) or tokens.size() * n_vocab
  // floats (Logits::All). Throws rwkv::Error for token ids outside the
  // vocabulary or a state of another model, leaving `state` untouched.
  void forward(std::span<const int32_t> tokens, State& state, Logits which, std::span<float> logits,
               Workspace* workspace = nullptr) const;

 protected:
  explicit Model(ModelConfig config) : config_(std::move(config)) {}
  virtual void forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                            Workspace& workspace) const = 0;

  ModelConfig config_;
};

}  // namespace rwkv
