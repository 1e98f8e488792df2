#include "model/model.h"

#include "core/error.h"

namespace rwkv {

StateShape Model::state_shape() const {
  return StateShape{config_.arch,
                    uint32_t(config_.n_layer),
                    uint32_t(config_.n_embd),
                    uint32_t(config_.n_head),
                    uint32_t(config_.head_size),
                    uint32_t(config_.n_vocab)};
}

void Model::forward(std::span<const int32_t> tokens, State& state, Logits which, std::span<float> logits,
                    Workspace* workspace) const {
  if (tokens.empty()) fail("no tokens to process");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.n_vocab)
      fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[i], i, config_.n_vocab - 1);
  }
  if (state.shape() != state_shape() || state.size() != state_size())
    fail("the state belongs to a different model shape");
  const size_t needed = which == Logits::All    ? tokens.size() * size_t(config_.n_vocab)
                        : which == Logits::Last ? size_t(config_.n_vocab)
                                                : 0;
  if (logits.size() < needed) fail("logits buffer holds {} floats, {} needed", logits.size(), needed);
  std::unique_ptr<Workspace> local;
  if (workspace == nullptr) {
    local = new_workspace();
    workspace = local.get();
  }
  forward_impl(tokens, state, which, logits.data(), *workspace);
}

}  // namespace rwkv
