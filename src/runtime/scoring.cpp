#include "runtime/scoring.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"

namespace rwkv {

namespace {

// log(sum(exp(logits))) in double and the index of the (first) largest logit.
double log_sum_exp(std::span<const float> logits, size_t& argmax) {
  argmax = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[argmax]) argmax = i;
  const double max = logits[argmax];
  double sum = 0.0;
  for (float l : logits) sum += std::exp(double(l) - max);
  return max + std::log(sum);
}

}  // namespace

TokenScore score_logits(std::span<const float> logits, int32_t target) {
  if (target < 0 || size_t(target) >= logits.size())
    fail("target token {} is outside the vocabulary (0..{})", target, int64_t(logits.size()) - 1);
  size_t top = 0;
  const double lse = log_sum_exp(logits, top);
  TokenScore s;
  s.nll = lse - double(logits[size_t(target)]);
  s.greedy = top == size_t(target);
  return s;
}

TokenScore score_logits(std::span<const float> logits, std::span<const float> reference, int32_t target) {
  if (reference.size() != logits.size())
    fail("reference logits have {} entries, the model's {}", reference.size(), logits.size());
  TokenScore s = score_logits(logits, target);
  size_t top = 0, ref_top = 0;
  const double lse = log_sum_exp(logits, top), ref_lse = log_sum_exp(reference, ref_top);
  s.reference_nll = ref_lse - double(reference[size_t(target)]);
  // KL(P || Q) = sum p (log p - log q), with log p = r - ref_lse, log q = l - lse.
  double kl = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double log_p = double(reference[i]) - ref_lse;
    kl += std::exp(log_p) * (log_p - (double(logits[i]) - lse));
  }
  s.kl = std::max(0.0, kl);  // >= 0 in exact arithmetic; rounding may leave a tiny negative
  s.same_top = top == ref_top;
  return s;
}

int64_t default_score_chunk(int64_t n_vocab) {
  return std::clamp<int64_t>((int64_t(1) << 24) / std::max<int64_t>(1, n_vocab), 16, 1024);
}

std::vector<TokenScore> score_tokens(const Model& model, State& state, std::span<const int32_t> tokens, size_t first,
                                     Workspace* workspace, int64_t chunk, const ScoreReference* reference) {
  const size_t n = tokens.size();
  if (first < 1 || first > n) fail("score_tokens: first scored token {} is outside 1..{}", first, n);
  const int64_t n_vocab = model.config().n_vocab;
  if (chunk <= 0) chunk = default_score_chunk(n_vocab);
  // Checked up front: the scoring below runs on the pool, where nothing may throw.
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= n_vocab)
      fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[i], i, n_vocab - 1);
  std::unique_ptr<Workspace> local, ref_local;
  if (workspace == nullptr) {
    local = model.new_workspace();
    workspace = local.get();
  }
  const Model* ref = reference != nullptr ? reference->model : nullptr;
  Workspace* ref_workspace = nullptr;
  if (ref != nullptr) {
    if (reference->state == nullptr) fail("score_tokens: the reference has no state");
    if (ref->config().n_vocab != n_vocab)
      fail("the reference model has {} logits, the model {}", ref->config().n_vocab, n_vocab);
    ref_workspace = reference->workspace;
    if (ref_workspace == nullptr) {
      ref_local = ref->new_workspace();
      ref_workspace = ref_local.get();
    }
  }

  // Tokens [0, first - 1) only condition what follows.
  const size_t quiet = first - 1;
  for (size_t at = 0; at < quiet; at += size_t(chunk)) {
    const size_t m = std::min(size_t(chunk), quiet - at);
    model.forward(tokens.subspan(at, m), state, Logits::None, {}, workspace);
    if (ref != nullptr) ref->forward(tokens.subspan(at, m), *reference->state, Logits::None, {}, ref_workspace);
  }

  // From position first - 1 on, the logits at position j score token j + 1;
  // the last token's logits score nothing but come with its chunk.
  std::vector<TokenScore> scores(n - first);
  std::vector<float> logits, ref_logits;
  for (size_t at = quiet; at < n; at += size_t(chunk)) {
    const size_t m = std::min(size_t(chunk), n - at);
    logits.resize(m * size_t(n_vocab));
    model.forward(tokens.subspan(at, m), state, Logits::All, logits, workspace);
    if (ref != nullptr) {
      ref_logits.resize(m * size_t(n_vocab));
      ref->forward(tokens.subspan(at, m), *reference->state, Logits::All, ref_logits, ref_workspace);
    }
    const int64_t scored = int64_t(std::min(m, n - 1 - at));  // positions with a next token
    thread_pool().parallel_for(scored, 4, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const size_t j = at + size_t(p);
        const std::span<const float> row(logits.data() + size_t(p) * size_t(n_vocab), size_t(n_vocab));
        if (ref != nullptr) {
          const std::span<const float> ref_row(ref_logits.data() + size_t(p) * size_t(n_vocab), size_t(n_vocab));
          scores[j + 1 - first] = score_logits(row, ref_row, tokens[j + 1]);
        } else {
          scores[j + 1 - first] = score_logits(row, tokens[j + 1]);
        }
      }
    });
  }
  return scores;
}

}  // namespace rwkv
