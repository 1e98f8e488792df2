// Token sampling with RWKV's conventions (the official pipeline's order):
// bans and logit bias, presence/frequency penalties over exponentially decayed
// occurrence counts, an optional repetition penalty, then softmax, top-k /
// top-p / min-p truncation, temperature, and a draw from a seeded generator.
// Temperature 0 is greedy (argmax after penalties).
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace rwkv {

struct SamplerParams {
  float temperature = 1.0f;
  float top_p = 1.0f;   // keep the smallest set of tokens whose probability reaches top_p
  int top_k = 0;        // 0: off
  float min_p = 0.0f;   // drop tokens below min_p * p(most likely)
  float presence_penalty = 0.0f;   // subtracted once a token has occurred (alpha_presence)
  float frequency_penalty = 0.0f;  // subtracted per (decayed) occurrence (alpha_frequency)
  float penalty_decay = 0.996f;    // occurrence counts shrink by this per generated token (alpha_decay)
  float repeat_penalty = 1.0f;     // llama.cpp-style: positive logits / p, negative * p, for occurred tokens
  std::vector<int32_t> ban{};      // never sampled
  std::map<int32_t, float> logit_bias{};
  uint64_t seed = 0;
};

// Validates parameters against a vocabulary size; throws rwkv::Error naming the bad one.
void validate(const SamplerParams& params, int64_t n_vocab);

class Sampler {
 public:
  Sampler(SamplerParams params, int64_t n_vocab);

  // Picks the next token from `logits` (n_vocab raw model outputs; left
  // unchanged). Does not record the token: call accept() for that.
  int32_t sample(std::span<const float> logits);
  // Records a token that is now part of the text (generated or, if the caller
  // wants, from the prompt): decays all counts, then counts this one with `weight`.
  void accept(int32_t token, float weight = 1.0f);

  // The penalty-adjusted logits sample() draws from (for tests and tools).
  void apply_penalties(std::span<float> logits) const;

  // Occurrence counts and the generator's state, so a paused generation can
  // continue exactly (stored in state files).
  std::string save() const;
  void restore(const std::string& saved);

  const SamplerParams& params() const { return params_; }
  const std::unordered_map<int32_t, float>& occurrences() const { return occurrence_; }

 private:
  SamplerParams params_;
  int64_t n_vocab_;
  std::unordered_map<int32_t, float> occurrence_;
  std::mt19937_64 rng_;
  // scratch reused across calls
  std::vector<float> work_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace rwkv
