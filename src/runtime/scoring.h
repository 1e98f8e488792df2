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
};

// -log softmax(logits)[target] in double, and whether target is the argmax
// (the first one on ties). logits has n_vocab entries; target must be in range.
TokenScore score_logits(std::span<const float> logits, int32_t target);

// Feeds tokens[0, n) from `state` (advancing it through all of them) and
// scores tokens[first, n), each by the logits after the tokens before it:
// out[i - first] for token i. Needs 1 <= first <= n (the first token of a
// sequence has nothing to be predicted from; callers put a start token such
// as 0 there). Tokens before first - 1 run without logits; from there on,
// chunks of at most `chunk` tokens run in sequence mode with logits at every
// position, whose log-softmaxes are spread over the thread pool.
std::vector<TokenScore> score_tokens(const Model& model, State& state, std::span<const int32_t> tokens, size_t first,
                                     Workspace* workspace = nullptr, int64_t chunk = 0);

// The default chunk for score_tokens: about 64 MiB of float logits, at least
// 16 and at most 1024 tokens.
int64_t default_score_chunk(int64_t n_vocab);

}  // namespace rwkv
