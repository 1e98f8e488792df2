// Training: gradients against finite differences, the trainer's forward
// against the inference engine, checkpoints, the optimizer and the CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/loader.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/model.h"

namespace rwkv::train {
namespace {

// A tiny shape with every dimension distinct, so a transposed or mixed-up
// buffer cannot go unnoticed: C 16 = 2 heads of 8, LoRA ranks 4/5/3/6, F 24.
TrainConfig tiny_config() {
  TrainConfig c;
  c.n_layer = 2;
  c.n_embd = 16;
  c.head_size = 8;
  c.n_vocab = 13;
  c.dim_ffn = 24;
  c.lora_w = 4;
  c.lora_a = 5;
  c.lora_v = 3;
  c.lora_g = 6;
  return c;
}

// Random weights in the ranges trained models have (mixes in [0, 1], norms
// near 1, everything else O(1) or smaller), so every path carries gradient.
template <typename T>
void randomize(const ParamLayout& layout, std::vector<T>& params, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (const TensorSpec& s : layout.tensors()) {
    T* p = params.data() + s.offset;
    const std::string& n = s.name;
    auto has = [&](const char* part) { return n.find(part) != std::string::npos; };
    for (size_t i = 0; i < s.numel; ++i) {
      double x = u(rng);
      if (has(".x_")) {
        x = 0.5 + 0.5 * x;
      } else if (has("ln") && has(".weight")) {
        x = 1.0 + 0.3 * x;
      } else if (has("k_a")) {
        x = 1.0 + 0.2 * x;
      } else if (s.shape.size() == 2 && s.shape[0] > 1 && s.shape[1] > 1) {
        x *= 1.5 / std::sqrt(double(s.shape[1]));
      } else {
        x *= 0.5;
      }
      p[i] = T(x);
    }
  }
}

template <typename T>
void randomize_state(std::vector<T>& state, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-0.5, 0.5);
  for (T& x : state) x = T(u(rng));
}

struct Batch {
  int64_t B = 2, T = 7;
  std::vector<int32_t> tokens, targets;
};

Batch random_batch(int64_t vocab, int64_t B, int64_t T, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Batch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * T; ++i) {
    b.tokens.push_back(int32_t(rng() % uint64_t(vocab)));
    b.targets.push_back(int32_t(rng() % uint64_t(vocab)));
  }
  b.targets[3] = -1;  // one uncounted position
  return b;
}

// Analytic gradients of every tensor (a few entries each, always the first
// and last) and of every part of the initial state against central finite
// differences, in float64. Tolerance: |analytic - numeric| <= 1e-7 + 1e-5
// |numeric|. With h = 1e-5 the truncation error is O(h^2 |f'''|) ~ 1e-10 and
// the rounding error ~ 1e-16 |f| / h ~ 1e-11, so real agreement sits far
// below the bound, while a wrong term (gradients here are 1e-3 to 1) is far above.
TEST(TrainGrad, EveryParameterAndTheInitialStateMatchFiniteDifferences) {
  const TrainConfig cfg = tiny_config();
  // Chunks of 3 over 7 tokens: full chunks and a ragged last one.
  TrainModel<double> model(cfg, 3);
  randomize(model.layout(), model.params, 1);
  randomize_state(model.state, 2);
  const Batch batch = random_batch(cfg.n_vocab, 2, 7, 3);
  auto loss = [&] { return model.loss(batch.tokens, batch.targets, batch.B, batch.T, {}, false); };

  model.zero_grads();
  const double base = model.loss(batch.tokens, batch.targets, batch.B, batch.T, {}, true);
  EXPECT_NEAR(base, loss(), 1e-12);  // the backward leaves the parameters alone

  const double h = 1e-5;
  auto check = [&](std::vector<double>& values, const std::vector<double>& grads, size_t offset, size_t numel,
                   const std::string& what, bool expect_zero) {
    std::mt19937_64 rng(offset + 17);
    std::vector<size_t> picks = {0, numel - 1};
    for (int i = 0; i < 4 && numel > 2; ++i) picks.push_back(rng() % numel);
    double largest = 0.0;
    for (size_t i = 0; i < numel; ++i) largest = std::max(largest, std::fabs(grads[offset + i]));
    if (expect_zero) {
      EXPECT_EQ(largest, 0.0) << what;
      return;
    }
    EXPECT_GT(largest, 1e-6) << what << ": no gradient at all, so the check would be vacuous";
    for (size_t i : picks) {
      double& x = values[offset + i];
      const double saved = x;
      x = saved + h;
      const double up = loss();
      x = saved - h;
      const double down = loss();
      x = saved;
      const double numeric = (up - down) / (2 * h);
      const double analytic = grads[offset + i];
      EXPECT_NEAR(analytic, numeric, 1e-7 + 1e-5 * std::fabs(numeric)) << what << "[" << i << "]";
    }
  };
  for (const TensorSpec& s : model.layout().tensors()) {
    // Layer 0's value-residual tensors exist in official checkpoints but are unused.
    const bool unused = s.name.rfind("blocks.0.att.v", 0) == 0 && s.name.size() == 15;
    check(model.params, model.grads, s.offset, s.numel, s.name, unused);
  }
  const size_t C = size_t(cfg.n_embd), HNN = size_t(cfg.n_head() * cfg.head_size * cfg.head_size);
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const size_t base_off = size_t(l) * (2 * C + HNN);
    const std::string p = "state layer " + std::to_string(l);
    check(model.state, model.state_grad, base_off, C, p + " time-mix shift", false);
    check(model.state, model.state_grad, base_off + C, HNN, p + " wkv", false);
    check(model.state, model.state_grad, base_off + C + HNN, C, p + " channel-mix shift", false);
  }
}

// Gradients accumulate across calls and scale with LossOptions::scale, and the
// state-only mode leaves parameter gradients alone but gives the same state gradient.
TEST(TrainGrad, AccumulationScaleAndStateOnlyMode) {
  const TrainConfig cfg = tiny_config();
  TrainModel<double> model(cfg, 4);
  randomize(model.layout(), model.params, 5);
  randomize_state(model.state, 6);
  const Batch batch = random_batch(cfg.n_vocab, 3, 5, 7);
  model.zero_grads();
  model.loss(batch.tokens, batch.targets, batch.B, batch.T, {}, true);
  const std::vector<double> g1 = model.grads, s1 = model.state_grad;
  model.loss(batch.tokens, batch.targets, batch.B, batch.T, {.l2wrap = false, .scale = 0.5}, true);
  for (size_t i = 0; i < g1.size(); ++i) ASSERT_NEAR(model.grads[i], 1.5 * g1[i], 1e-12 + 1e-9 * std::fabs(g1[i]));
  model.zero_grads();
  model.param_grads = false;
  model.loss(batch.tokens, batch.targets, batch.B, batch.T, {}, true);
  for (double g : model.grads) ASSERT_EQ(g, 0.0);
  for (size_t i = 0; i < s1.size(); ++i) ASSERT_NEAR(model.state_grad[i], s1[i], 1e-12 + 1e-9 * std::fabs(s1[i]));
}

// L2-wrap adds 1e-4 / tokens * max to each counted row's largest logit: the
// head's gradient changes by exactly that outer product's effect, the loss not at all.
TEST(TrainGrad, L2WrapChangesOnlyTheGradient) {
  const TrainConfig cfg = tiny_config();
  TrainModel<double> model(cfg, 4);
  randomize(model.layout(), model.params, 8);
  const Batch batch = random_batch(cfg.n_vocab, 1, 6, 9);
  model.zero_grads();
  const double plain = model.loss(batch.tokens, batch.targets, 1, 6, {}, true);
  const std::vector<double> g_plain = model.grads;
  model.zero_grads();
  const double wrapped = model.loss(batch.tokens, batch.targets, 1, 6, {.l2wrap = true}, true);
  EXPECT_EQ(plain, wrapped);
  double diff = 0.0;
  for (size_t i = 0; i < g_plain.size(); ++i) diff = std::max(diff, std::fabs(model.grads[i] - g_plain[i]));
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(diff, 1e-3);  // 1e-4 / 5 tokens * logits of O(1)
}

// The trainer's float forward equals the inference engine on the same
// weights (loaded through load_model from an in-memory archive), for every
// position of two sequences, from a zero state and from a random state.
// Tolerance 2e-5 * (1 + max |logit|): both are float32 with different
// summation orders (BLAS blocking vs the engine's loops), ~1e-7 relative per
// operation through two layers, so differences are ~1e-6; a wrong term is O(1).
TEST(TrainForward, LogitsEqualTheInferenceEngine) {
  TrainConfig cfg = tiny_config();
  cfg.n_vocab = 40;
  TrainModel<float> model(cfg, 4);
  randomize(model.layout(), model.params, 10);
  const int64_t B = 2, T = 9;
  const Batch batch = random_batch(cfg.n_vocab, B, T, 11);
  auto engine = load_model(make_archive(model.layout(), model.params, DType::F32));
  ASSERT_EQ(engine->config().n_layer, cfg.n_layer);
  for (bool random_state : {false, true}) {
    if (random_state) randomize_state(model.state, 12);
    std::vector<float> ours(size_t(B * T * cfg.n_vocab));
    model.forward_logits(batch.tokens, B, T, ours.data());
    for (int64_t b = 0; b < B; ++b) {
      State state = engine->new_state();
      ASSERT_EQ(state.size(), model.state.size());
      std::copy(model.state.begin(), model.state.end(), state.data().begin());
      std::vector<float> theirs(size_t(T * cfg.n_vocab));
      engine->forward(std::span<const int32_t>(batch.tokens).subspan(size_t(b * T), size_t(T)), state, Logits::All,
                      theirs);
      const std::span<const float> mine(ours.data() + b * T * cfg.n_vocab, size_t(T * cfg.n_vocab));
      float scale = 0.0f;
      for (float x : theirs) scale = std::max(scale, std::fabs(x));
      EXPECT_GT(scale, 0.1f);
      EXPECT_LE(test::max_abs_diff(mine, theirs), 2e-5f * (1.0f + scale)) << "sequence " << b;
    }
  }
}

TEST(TrainForward, BadTokensAndShapesAreErrors) {
  TrainModel<float> model(tiny_config(), 4);
  std::vector<float> logits(13 * 4);
  const std::vector<int32_t> bad = {1, 2, 13, 4};
  EXPECT_THROW(model.forward_logits(bad, 1, 4, logits.data()), Error);
  const std::vector<int32_t> ok = {1, 2, 3, 4};
  EXPECT_THROW(model.forward_logits(ok, 2, 3, logits.data()), Error);
  const std::vector<int32_t> bad_target = {1, 2, -2, 4};
  EXPECT_THROW(model.loss(ok, bad_target, 1, 4, LossOptions{}, false), Error);
  TrainConfig c = tiny_config();
  c.head_size = 5;
  EXPECT_THROW(TrainModel<float>(c, 4), Error);
}

}  // namespace
}  // namespace rwkv::train
