// A Session is one sequence being read and written: the model (shared,
// immutable), its recurrent state, the logits of the last token fed, and the
// sampler with its penalty counts. It can be saved to a state file and
// resumed exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/state_file.h"

namespace rwkv {

class Session {
 public:
  Session(const Model& model, SamplerParams sampler_params);

  const Model& model() const { return model_; }
  State& state() { return state_; }
  const State& state() const { return state_; }
  Sampler& sampler() { return sampler_; }

  // Feeds tokens (in chunks of `chunk` tokens through sequence mode; 0 = all
  // at once) and keeps the logits of the last one.
  void feed(std::span<const int32_t> tokens, int64_t chunk = 0);
  // True once some token has been fed (or restored), so there are logits to sample from.
  bool has_logits() const { return has_logits_; }
  std::span<const float> logits() const { return logits_; }

  // Samples the next token from the current logits; does not feed it.
  int32_t sample();
  // Records `token` with the sampler (penalties) and feeds it.
  void accept(int32_t token);

  // State file with the state, the last logits and the sampler's counts and
  // generator, so `restore` continues exactly where this session is.
  StateFile snapshot() const;
  void restore(const StateFile& file);

  // Puts the session at `state` with `logits` (n_vocab floats, or empty when
  // nothing has been fed, e.g. a fresh state); the sampler is untouched. Used
  // to continue from a cached or remembered prompt state. Fails for a state
  // of another model shape or logits of the wrong size.
  void set_state(const State& state, std::span<const float> logits);
  // Back to the fresh (all-zero) state with no logits; the sampler is untouched.
  void reset();

  // Counts tokens fed through the model (for tests and statistics).
  int64_t tokens_fed() const { return tokens_fed_; }

 private:
  const Model& model_;
  State state_;
  Sampler sampler_;
  std::unique_ptr<Workspace> workspace_;
  std::vector<float> logits_;
  bool has_logits_ = false;
  int64_t tokens_fed_ = 0;
};

}  // namespace rwkv
