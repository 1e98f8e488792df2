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
  const BatchItem item{tokens, &state, which, logits};
  validate(item);
  std::unique_ptr<Workspace> local;
  if (workspace == nullptr) {
    local = new_workspace();
    workspace = local.get();
  }
  forward_impl(tokens, state, which, logits.data(), *workspace);
}

void Model::validate(const BatchItem& item) const {
  const auto tokens = item.tokens;
  if (tokens.empty()) fail("no tokens to process");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.n_vocab)
      fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[i], i, config_.n_vocab - 1);
  }
  if (item.state == nullptr) fail("no state given");
  if (item.state->shape() != state_shape() || item.state->size() != state_size())
    fail("the state belongs to a different model shape");
  const size_t needed = item.which == Logits::All    ? tokens.size() * size_t(config_.n_vocab)
                        : item.which == Logits::Last ? size_t(config_.n_vocab)
                                                     : 0;
  if (item.logits.size() < needed) fail("logits buffer holds {} floats, {} needed", item.logits.size(), needed);
}

void Model::forward_batch(std::span<const BatchItem> items, Workspace* workspace) const {
  for (size_t i = 0; i < items.size(); ++i) {
    validate(items[i]);
    for (size_t j = 0; j < i; ++j)
      if (items[j].state == items[i].state) fail("batch items {} and {} share one state", j, i);
  }
  if (items.empty()) return;
  std::unique_ptr<Workspace> local;
  if (workspace == nullptr) {
    local = new_workspace();
    workspace = local.get();
  }
  forward_batch_impl(items, *workspace);
}

void Model::forward_batch_impl(std::span<const BatchItem> items, Workspace& workspace) const {
  for (const BatchItem& item : items)
    forward_impl(item.tokens, *item.state, item.which, item.logits.data(), workspace);
}

}  // namespace rwkv
