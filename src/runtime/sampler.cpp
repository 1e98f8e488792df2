#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace rwkv {

void validate(const SamplerParams& p, int64_t n_vocab) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) fail("temperature must be >= 0 (got {})", p.temperature);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("top-p must be in (0, 1] (got {})", p.top_p);
  if (p.top_k < 0) fail("top-k must be >= 0 (got {})", p.top_k);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) fail("min-p must be in [0, 1] (got {})", p.min_p);
  if (!(p.penalty_decay >= 0.0f && p.penalty_decay <= 1.0f))
    fail("penalty decay must be in [0, 1] (got {})", p.penalty_decay);
  if (!(p.repeat_penalty > 0.0f) || !std::isfinite(p.repeat_penalty))
    fail("repeat penalty must be > 0 (got {})", p.repeat_penalty);
  if (!std::isfinite(p.presence_penalty) || !std::isfinite(p.frequency_penalty)) fail("penalties must be finite");
  for (int32_t t : p.ban)
    if (t < 0 || t >= n_vocab) fail("banned token {} is outside the vocabulary (0..{})", t, n_vocab - 1);
  for (const auto& [t, bias] : p.logit_bias) {
    if (t < 0 || t >= n_vocab) fail("logit bias token {} is outside the vocabulary (0..{})", t, n_vocab - 1);
    if (std::isnan(bias)) fail("logit bias for token {} is not a number", t);
  }
  if (size_t(n_vocab) <= p.ban.size() && n_vocab > 0) {
    std::vector<bool> banned(static_cast<size_t>(n_vocab));
    for (int32_t t : p.ban) banned[size_t(t)] = true;
    if (std::all_of(banned.begin(), banned.end(), [](bool b) { return b; })) fail("every token is banned");
  }
}

Sampler::Sampler(SamplerParams params, int64_t n_vocab)
    : params_(std::move(params)), n_vocab_(n_vocab), rng_(params_.seed) {
  validate(params_, n_vocab_);
}

void Sampler::apply_penalties(std::span<float> logits) const {
  for (const auto& [t, bias] : params_.logit_bias) logits[size_t(t)] += bias;
  for (const auto& [t, count] : occurrence_) {
    float& l = logits[size_t(t)];
    if (params_.repeat_penalty != 1.0f) l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
    l -= params_.presence_penalty + count * params_.frequency_penalty;
  }
  for (int32_t t : params_.ban) logits[size_t(t)] = -std::numeric_limits<float>::infinity();
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (int64_t(logits.size()) != n_vocab_) fail("sampler expects {} logits, got {}", n_vocab_, logits.size());
  work_.assign(logits.begin(), logits.end());
  apply_penalties(work_);
  const size_t V = work_.size();
  const size_t best = size_t(std::max_element(work_.begin(), work_.end()) - work_.begin());
  const float max_logit = work_[best];
  if (!std::isfinite(max_logit)) fail("no token can be sampled: the logits are not finite");
  if (params_.temperature == 0.0f) return int32_t(best);

  // Softmax at temperature 1 (truncation is decided on these, as the official
  // pipeline does), kept unnormalised: p_i = exp(l_i - max).
  double total = 0.0;
  for (float& l : work_) {
    l = std::exp(l - max_logit);
    total += l;
  }
  // Candidates: the smallest set of most likely tokens that top-k, top-p and
  // min-p allow. Grow a partially sorted prefix instead of sorting all of V.
  const float min_keep = params_.min_p * 1.0f;  // relative to the top token's p = 1
  const size_t k_limit = params_.top_k > 0 ? std::min(V, size_t(params_.top_k)) : V;
  candidates_.clear();
  for (size_t i = 0; i < V; ++i)
    if (work_[i] > 0.0f && work_[i] >= min_keep) candidates_.emplace_back(work_[i], int32_t(i));
  auto by_prob = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  const double target = double(params_.top_p) * total;
  size_t keep = std::min(k_limit, candidates_.size());
  size_t sorted = 0;
  double cumulative = 0.0;
  size_t cut = 0;
  for (size_t window = 64;; window *= 4) {
    const size_t upto = std::min(window, keep);
    std::partial_sort(candidates_.begin() + long(sorted), candidates_.begin() + long(upto), candidates_.end(), by_prob);
    bool reached = false;
    for (; cut < upto; ++cut) {
      cumulative += candidates_[cut].first;
      if (cumulative >= target) {
        ++cut;
        reached = true;
        break;
      }
    }
    sorted = upto;
    if (reached || upto == keep) break;
  }
  keep = std::max<size_t>(1, std::min(cut, keep));

  // Temperature on the kept probabilities: p^(1/T), then draw.
  double kept_total = 0.0;
  const double inv_t = 1.0 / double(params_.temperature);
  for (size_t i = 0; i < keep; ++i) {
    const double q = std::pow(double(candidates_[i].first), inv_t);
    candidates_[i].first = float(q);
    kept_total += q;
  }
  std::uniform_real_distribution<double> uniform(0.0, kept_total);
  double r = uniform(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= candidates_[i].first;
    if (r < 0.0) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

void Sampler::accept(int32_t token, float weight) {
  if (token < 0 || token >= n_vocab_) fail("token {} is outside the vocabulary", token);
  for (auto& [t, count] : occurrence_) count *= params_.penalty_decay;
  occurrence_[token] += weight;
}

std::string Sampler::save() const {
  std::ostringstream out;
  out << rng_ << '\n' << occurrence_.size() << '\n';
  std::vector<std::pair<int32_t, float>> sorted(occurrence_.begin(), occurrence_.end());
  std::sort(sorted.begin(), sorted.end());
  out.precision(9);
  for (const auto& [t, c] : sorted) out << t << ' ' << std::hexfloat << c << std::defaultfloat << '\n';
  return out.str();
}

void Sampler::restore(const std::string& saved) {
  std::istringstream in(saved);
  std::mt19937_64 rng;
  size_t n = 0;
  in >> rng >> n;
  if (!in || n > size_t(n_vocab_)) fail("damaged sampler state");
  std::unordered_map<int32_t, float> occurrence;
  for (size_t i = 0; i < n; ++i) {
    int32_t t;
    std::string count_text;
    in >> t >> count_text;
    if (!in || t < 0 || t >= n_vocab_) fail("damaged sampler state");
    occurrence[t] = std::strtof(count_text.c_str(), nullptr);
  }
  rng_ = rng;
  occurrence_ = std::move(occurrence);
}

}  // namespace rwkv
