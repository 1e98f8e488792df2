#include "runtime/session.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace rwkv {
namespace {

constexpr const char* kLogitsSection = "logits";
constexpr const char* kSamplerSection = "sampler";

}  // namespace

Session::Session(const Model& model, SamplerParams sampler_params)
    : model_(model),
      state_(model.new_state()),
      sampler_(std::move(sampler_params), model.config().n_vocab),
      workspace_(model.new_workspace()),
      logits_(size_t(model.config().n_vocab)) {}

void Session::feed(std::span<const int32_t> tokens, int64_t chunk) {
  if (tokens.empty()) return;
  const size_t step = chunk <= 0 ? tokens.size() : size_t(chunk);
  for (size_t start = 0; start < tokens.size(); start += step) {
    const size_t n = std::min(step, tokens.size() - start);
    const bool last = start + n == tokens.size();
    model_.forward(tokens.subspan(start, n), state_, last ? Logits::Last : Logits::None, logits_,
                   workspace_.get());
    tokens_fed_ += int64_t(n);
  }
  has_logits_ = true;
}

int32_t Session::sample() {
  if (!has_logits_) fail("nothing to continue from: feed a prompt or load a state saved after generation");
  return sampler_.sample(logits_);
}

void Session::accept(int32_t token) {
  sampler_.accept(token);
  const int32_t one[1] = {token};
  feed(one);
}

StateFile Session::snapshot() const {
  StateFile file{state_, {}};
  if (has_logits_) {
    auto& bytes = file.sections[kLogitsSection];
    bytes.resize(logits_.size() * sizeof(float));
    std::memcpy(bytes.data(), logits_.data(), bytes.size());
  }
  const std::string sampler = sampler_.save();
  const auto* p = reinterpret_cast<const std::byte*>(sampler.data());
  file.sections[kSamplerSection].assign(p, p + sampler.size());
  return file;
}

void Session::restore(const StateFile& file) {
  if (file.state.shape() != model_.state_shape() || file.state.size() != model_.state_size())
    fail("the state belongs to a different model shape");
  state_ = file.state;
  has_logits_ = false;
  if (auto it = file.sections.find(kLogitsSection); it != file.sections.end()) {
    if (it->second.size() != logits_.size() * sizeof(float)) fail("the saved logits do not fit this model");
    std::memcpy(logits_.data(), it->second.data(), it->second.size());
    has_logits_ = true;
  }
  if (auto it = file.sections.find(kSamplerSection); it != file.sections.end())
    sampler_.restore(std::string(reinterpret_cast<const char*>(it->second.data()), it->second.size()));
}

void Session::set_state(const State& state, std::span<const float> logits) {
  if (state.shape() != model_.state_shape() || state.size() != model_.state_size())
    fail("the state belongs to a different model shape");
  if (!logits.empty() && logits.size() != logits_.size())
    fail("{} logits do not fit this model's vocabulary of {}", logits.size(), logits_.size());
  state_ = state;
  std::copy(logits.begin(), logits.end(), logits_.begin());
  has_logits_ = !logits.empty();
}

void Session::reset() {
  state_ = model_.new_state();
  has_logits_ = false;
}

}  // namespace rwkv
