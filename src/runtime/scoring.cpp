#include "runtime/scoring.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"

namespace rwkv {

TokenScore score_logits(std::span<const float> logits, int32_t target) {
  if (target < 0 || size_t(target) >= logits.size())
    fail("target token {} is outside the vocabulary (0..{})", target, int64_t(logits.size()) - 1);
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  const double max = logits[best];
  double sum = 0.0;
  for (float l : logits) sum += std::exp(double(l) - max);
  return TokenScore{max + std::log(sum) - double(logits[size_t(target)]), best == size_t(target)};
}

int64_t default_score_chunk(int64_t n_vocab) {
  return std::clamp<int64_t>((int64_t(1) << 24) / std::max<int64_t>(1, n_vocab), 16, 1024);
}

std::vector<TokenScore> score_tokens(const Model& model, State& state, std::span<const int32_t> tokens, size_t first,
                                     Workspace* workspace, int64_t chunk) {
  const size_t n = tokens.size();
  if (first < 1 || first > n) fail("score_tokens: first scored token {} is outside 1..{}", first, n);
  const int64_t n_vocab = model.config().n_vocab;
  if (chunk <= 0) chunk = default_score_chunk(n_vocab);
  // Checked up front: the scoring below runs on the pool, where nothing may throw.
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= n_vocab)
      fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[i], i, n_vocab - 1);
  std::unique_ptr<Workspace> local;
  if (workspace == nullptr) {
    local = model.new_workspace();
    workspace = local.get();
  }

  // Tokens [0, first - 1) only condition what follows.
  const size_t quiet = first - 1;
  for (size_t at = 0; at < quiet; at += size_t(chunk)) {
    const size_t m = std::min(size_t(chunk), quiet - at);
    model.forward(tokens.subspan(at, m), state, Logits::None, {}, workspace);
  }

  // From position first - 1 on, the logits at position j score token j + 1;
  // the last token's logits score nothing but come with its chunk.
  std::vector<TokenScore> scores(n - first);
  std::vector<float> logits;
  for (size_t at = quiet; at < n; at += size_t(chunk)) {
    const size_t m = std::min(size_t(chunk), n - at);
    logits.resize(m * size_t(n_vocab));
    model.forward(tokens.subspan(at, m), state, Logits::All, logits, workspace);
    const int64_t scored = int64_t(std::min(m, n - 1 - at));  // positions with a next token
    thread_pool().parallel_for(scored, 4, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const size_t j = at + size_t(p);
        const std::span<const float> row(logits.data() + size_t(p) * size_t(n_vocab), size_t(n_vocab));
        scores[j + 1 - first] = score_logits(row, tokens[j + 1]);
      }
    });
  }
  return scores;
}

}  // namespace rwkv
