// Scoring text with a model: the log-likelihood of each token given the ones
// before it, for perplexity and benchmark evaluation (LAMBADA).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model.h"

namespace rwkv {

// One predicted token: -log p(token | everything before it), in nats, from a
// log-softmax of the logits in double; and whether it was the (first) most
// likely token, i.e. what greedy decoding would have picked.
struct TokenScore {
  double nll = 0.0;
  bool greedy = false;
  // With a reference model (score_tokens' `reference`): its NLL of the same
  // token, KL(reference || model) of the two next-token distributions in
  // nats, and whether both put the same token first.
  double reference_nll = 0.0;
  double kl = 0.0;
  bool same_top = true;
};

// Another model to compare with, read in step (e.g. the float model a
// quantized one was made from): same vocabulary, its own state.
struct ScoreReference {
  const Model* model = nullptr;
  State* state = nullptr;
  Workspace* workspace = nullptr;
};

// -log softmax(logits)[target] in double, and whether target is the argmax
// (the first one on ties). logits has n_vocab entries; target must be in range.
TokenScore score_logits(std::span<const float> logits, int32_t target);

// score_logits of `logits`, with the reference fields filled from the
// reference model's logits of the same position (both n_vocab floats).
TokenScore score_logits(std::span<const float> logits, std::span<const float> reference, int32_t target);

// Feeds tokens[0, n) from `state` (advancing it through all of them) and
// scores tokens[first, n), each by the logits after the tokens before it:
// out[i - first] for token i. Needs 1 <= first <= n (the first token of a
// sequence has nothing to be predicted from; callers put a start token such
// as 0 there). Tokens before first - 1 run without logits; from there on,
// chunks of at most `chunk` tokens run in sequence mode with logits at every
// position, whose log-softmaxes are spread over the thread pool. With a
// reference, it reads the same tokens (its state advanced likewise) and the
// scores carry the comparison.
std::vector<TokenScore> score_tokens(const Model& model, State& state, std::span<const int32_t> tokens, size_t first,
                                     Workspace* workspace = nullptr, int64_t chunk = 0,
                                     const ScoreReference* reference = nullptr);

// The default chunk for score_tokens: about 64 MiB of float logits, at least
// 16 and at most 1024 tokens.
int64_t default_score_chunk(int64_t n_vocab);

}  // namespace rwkv
