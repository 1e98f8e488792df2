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

// One sequence's part of a batched forward call: its new tokens, its state
// (advanced in place), and where its logits go (n_vocab floats for
// Logits::Last, tokens.size() * n_vocab for Logits::All).
struct BatchItem {
  std::span<const int32_t> tokens;
  State* state = nullptr;
  Logits which = Logits::Last;
  std::span<float> logits;
};

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

  // Advances several independent sequences in one call (each with its own
  // state and any number of new tokens): the projections run as one
  // matrix-matrix product over all their tokens, so B sequences decoding one
  // token each cost far less than B calls. Results equal separate forward()
  // calls up to float summation order. Validates every item before touching
  // any state; the states must be distinct objects.
  void forward_batch(std::span<const BatchItem> items, Workspace* workspace = nullptr) const;

 protected:
  explicit Model(ModelConfig config) : config_(std::move(config)) {}
  virtual void forward_impl(std::span<const int32_t> tokens, State& state, Logits which, float* logits,
                            Workspace& workspace) const = 0;
  // Versions without a batched path run the items one after another.
  virtual void forward_batch_impl(std::span<const BatchItem> items, Workspace& workspace) const;

  ModelConfig config_;

 private:
  void validate(const BatchItem& item) const;
};

}  // namespace rwkv
