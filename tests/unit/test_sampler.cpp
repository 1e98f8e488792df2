// Sampling on crafted logits: each option changes the distribution as specified.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "runtime/sampler.h"

namespace rwkv {
namespace {

// Logits whose softmax is exactly `probs`.
std::vector<float> logits_for(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(p > 0 ? float(std::log(p)) : -INFINITY);
  return l;
}

std::vector<double> frequencies(Sampler& s, const std::vector<float>& logits, int draws) {
  std::vector<double> f(logits.size());
  for (int i = 0; i < draws; ++i) f[size_t(s.sample(logits))] += 1.0 / draws;
  return f;
}

const std::vector<double> kProbs = {0.5, 0.3, 0.15, 0.05};

TEST(Sampler, TemperatureZeroIsGreedy) {
  Sampler s({.temperature = 0.0f}, 4);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(logits_for({0.2, 0.1, 0.6, 0.1})), 2);
}

TEST(Sampler, PlainSamplingFollowsTheSoftmax) {
  Sampler s({.seed = 1}, 4);
  const auto f = frequencies(s, logits_for(kProbs), 40000);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(f[i], kProbs[i], 0.01) << i;
}

TEST(Sampler, SameSeedSameDrawsOtherSeedOtherDraws) {
  Sampler a({.seed = 42}, 4), b({.seed = 42}, 4), c({.seed = 43}, 4);
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 64; ++i) {
    da.push_back(a.sample(logits_for(kProbs)));
    db.push_back(b.sample(logits_for(kProbs)));
    dc.push_back(c.sample(logits_for(kProbs)));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  Sampler s({.top_p = 0.7f, .seed = 2}, 4);  // 0.5 + 0.3 reaches 0.7: tokens 0 and 1 only
  const auto f = frequencies(s, logits_for(kProbs), 20000);
  EXPECT_NEAR(f[0], 0.5 / 0.8, 0.015);
  EXPECT_NEAR(f[1], 0.3 / 0.8, 0.015);
  EXPECT_EQ(f[2] + f[3], 0.0);
}

TEST(Sampler, TopPOnALargeVocabularyNeedsNoFullSort) {
  // 65536 tokens, a long flat tail: top-p must look past the first window.
  std::vector<double> probs(65536, 0.5 / 65000);
  for (int i = 0; i < 536; ++i) probs[size_t(i)] = 0.5 / 536;
  Sampler s({.top_p = 0.5f, .seed = 3}, 65536);
  const auto logits = logits_for(probs);
  for (int i = 0; i < 500; ++i) EXPECT_LT(s.sample(logits), 537);
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  Sampler s({.top_k = 2, .seed = 4}, 4);
  const auto f = frequencies(s, logits_for(kProbs), 20000);
  EXPECT_NEAR(f[0], 0.5 / 0.8, 0.015);
  EXPECT_EQ(f[2] + f[3], 0.0);
  Sampler one({.top_k = 1}, 4);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(one.sample(logits_for({0.3, 0.4, 0.3, 0.0})), 1);
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  Sampler s({.min_p = 0.5f, .seed = 5}, 4);  // keeps p >= 0.25: tokens 0 and 1
  const auto f = frequencies(s, logits_for(kProbs), 20000);
  EXPECT_GT(f[1], 0.3);
  EXPECT_EQ(f[2] + f[3], 0.0);
}

TEST(Sampler, TemperatureSharpensOrFlattens) {
  Sampler cold({.temperature = 0.5f, .seed = 6}, 4);  // p^2, renormalised
  const auto f = frequencies(cold, logits_for(kProbs), 40000);
  double z = 0;
  for (double p : kProbs) z += p * p;
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(f[i], kProbs[i] * kProbs[i] / z, 0.01) << i;
  Sampler hot({.temperature = 2.0f, .seed = 7}, 4);  // sqrt(p)
  const auto g = frequencies(hot, logits_for(kProbs), 40000);
  z = 0;
  for (double p : kProbs) z += std::sqrt(p);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(g[i], std::sqrt(kProbs[i]) / z, 0.01) << i;
}

TEST(Sampler, PresenceAndFrequencyPenaltiesDecay) {
  Sampler s({.presence_penalty = 0.5f, .frequency_penalty = 0.25f, .penalty_decay = 0.5f}, 4);
  s.accept(2);
  std::vector<float> l(4, 0.0f);
  s.apply_penalties(l);
  EXPECT_FLOAT_EQ(l[2], -(0.5f + 1.0f * 0.25f));
  EXPECT_FLOAT_EQ(l[0], 0.0f);
  s.accept(2);  // count: 1 * 0.5 + 1
  s.accept(1);  // counts: token 2 -> 0.75, token 1 -> 1
  std::fill(l.begin(), l.end(), 0.0f);
  s.apply_penalties(l);
  EXPECT_FLOAT_EQ(l[2], -(0.5f + 0.75f * 0.25f));
  EXPECT_FLOAT_EQ(l[1], -(0.5f + 1.0f * 0.25f));
  // Greedy decoding now avoids the penalised token.
  Sampler g({.temperature = 0.0f, .presence_penalty = 2.0f}, 3);
  g.accept(0);
  EXPECT_EQ(g.sample(std::vector<float>{1.0f, 0.0f, -1.0f}), 1);
}

TEST(Sampler, RepeatPenaltyScalesTowardsZeroAndBelow) {
  Sampler s({.repeat_penalty = 2.0f}, 3);
  s.accept(0);
  s.accept(1);
  std::vector<float> l = {4.0f, -4.0f, 4.0f};
  s.apply_penalties(l);
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  EXPECT_FLOAT_EQ(l[1], -8.0f);
  EXPECT_FLOAT_EQ(l[2], 4.0f);
}

TEST(Sampler, BansAndLogitBias) {
  Sampler s({.temperature = 0.0f, .ban = {0}, .logit_bias = {{2, 10.0f}}}, 3);
  EXPECT_EQ(s.sample(std::vector<float>{9.0f, 5.0f, 0.0f}), 2);
  Sampler banned({.ban = {0}, .seed = 8}, 3);
  for (int i = 0; i < 200; ++i) EXPECT_NE(banned.sample(std::vector<float>{20.0f, 0.0f, 0.0f}), 0);
}

TEST(Sampler, SaveAndRestoreContinueExactly) {
  Sampler a({.presence_penalty = 0.3f, .frequency_penalty = 0.3f, .seed = 9}, 4);
  for (int i = 0; i < 10; ++i) a.accept(a.sample(logits_for(kProbs)));
  Sampler b({.presence_penalty = 0.3f, .frequency_penalty = 0.3f, .seed = 1234}, 4);
  b.restore(a.save());
  for (int i = 0; i < 30; ++i) {
    const int32_t ta = a.sample(logits_for(kProbs)), tb = b.sample(logits_for(kProbs));
    ASSERT_EQ(ta, tb) << i;
    a.accept(ta);
    b.accept(tb);
  }
  EXPECT_THROW(b.restore("garbage"), Error);
}

TEST(Sampler, InvalidParametersAreRefused) {
  EXPECT_THROW(Sampler({.temperature = -1.0f}, 4), Error);
  EXPECT_THROW(Sampler({.top_p = 0.0f}, 4), Error);
  EXPECT_THROW(Sampler({.top_p = 1.5f}, 4), Error);
  EXPECT_THROW(Sampler({.top_k = -1}, 4), Error);
  EXPECT_THROW(Sampler({.min_p = 2.0f}, 4), Error);
  EXPECT_THROW(Sampler({.repeat_penalty = 0.0f}, 4), Error);
  EXPECT_THROW(Sampler({.ban = {4}}, 4), Error);
  EXPECT_THROW(Sampler({.ban = {0, 1, 2, 3}}, 4), Error);
  EXPECT_THROW(Sampler({.logit_bias = {{-1, 1.0f}}}, 4), Error);
  Sampler s({}, 4);
  EXPECT_THROW(s.sample(std::vector<float>(3)), Error);
  EXPECT_THROW(s.accept(4), Error);
}

}  // namespace
}  // namespace rwkv
