// Training: gradients against finite differences, the trainer's forward
// against the inference engine, checkpoints, the optimizer and the CLI.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/open.h"
#include "model/loader.h"
#include "runtime/state_file.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/distributed.h"
#include "train/init.h"
#include "train/lora.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/train_state.h"
#include "train/trainer.h"

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

// The float64 gradients of PyTorch autograd on an independent plain-PyTorch
// RWKV-7 (tests/reference/fixtures_train.py) equal ours for every tensor and
// the initial state. The fixture stores them as float32, so the tolerance is
// float32 rounding: 1e-6 of the tensor's largest gradient (rounding is 6e-8
// relative); the loss agrees to float32 rounding of the stored value.
TEST(TrainGrad, EqualPyTorchAutograd) {
  const auto archive = open_tensor_archive(test::fixture_path("train/grad-L2-C16.pth"));
  auto get = [&](const std::string& name) {
    const TensorInfo* t = archive->find(name);
    if (t == nullptr) ADD_FAILURE() << "fixture lacks " << name;
    std::vector<float> out(t ? size_t(t->numel()) : 0);
    if (t) convert_to_f32(t->dtype, t->data, out.data(), out.size());
    return std::vector<double>(out.begin(), out.end());
  };
  TrainModel<double> model(tiny_config(), 3);
  for (const TensorSpec& s : model.layout().tensors()) {
    const std::vector<double> w = get(s.name);
    ASSERT_EQ(w.size(), s.numel) << s.name;
    std::copy(w.begin(), w.end(), model.params.begin() + ptrdiff_t(s.offset));
  }
  model.state = get("test.state");
  ASSERT_EQ(model.state.size(), model.state_size());
  std::vector<int32_t> tokens, targets;
  for (double x : get("test.tokens")) tokens.push_back(int32_t(x));
  for (double x : get("test.targets")) targets.push_back(int32_t(x));
  ASSERT_EQ(tokens.size(), 14u);
  model.zero_grads();
  const double loss = model.loss(tokens, targets, 2, 7, {}, true);
  EXPECT_NEAR(loss, get("test.loss")[0], 1e-6 * loss);
  auto compare = [&](const std::vector<double>& ours, size_t offset, size_t n, const std::string& name) {
    const std::vector<double> ref = get("grad." + name);
    ASSERT_EQ(ref.size(), n) << name;
    double scale = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(ref[i]));
    for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(ours[offset + i] - ref[i]));
    EXPECT_LE(worst, 1e-6 * scale + 1e-12) << name << " (largest gradient " << scale << ")";
  };
  for (const TensorSpec& s : model.layout().tensors()) compare(model.grads, s.offset, s.numel, s.name);
  compare(model.state_grad, 0, model.state_grad.size(), "state");
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
  // A gradient mask: only the chosen tensors get (the same) gradients.
  model.param_grads = true;
  model.grad_mask.assign(model.layout().tensors().size(), false);
  const TensorSpec& key = model.layout().at("blocks.1.att.key.weight");
  const TensorSpec& emb = model.layout().at("emb.weight");
  model.grad_mask[model.layout().index(key.name)] = true;
  model.grad_mask[model.layout().index(emb.name)] = true;
  model.zero_grads();
  model.loss(batch.tokens, batch.targets, batch.B, batch.T, {}, true);
  for (const TensorSpec& s : model.layout().tensors())
    for (size_t i = s.offset; i < s.offset + s.numel; ++i) {
      const double expected = (&s == &key || &s == &emb) ? g1[i] : 0.0;
      ASSERT_NEAR(model.grads[i], expected, 1e-12 + 1e-9 * std::fabs(expected)) << s.name;
    }
}

// LoRA: the adapters' gradients (chain rule through W = W0 + s B A) against
// central differences, float64, same tolerance as the parameter check.
TEST(TrainGrad, LoraAdaptersMatchFiniteDifferences) {
  const TrainConfig cfg = tiny_config();
  TrainModel<double> model(cfg, 3);
  randomize(model.layout(), model.params, 21);
  Lora<double> lora(model.layout(), 3, 5.0, model.params);
  std::mt19937_64 rng(22);
  std::uniform_real_distribution<double> u(-0.3, 0.3);
  for (double& x : lora.adapters) x = u(rng);  // B non-zero, so dA is too
  model.grad_mask = lora.grad_mask();
  const Batch batch = random_batch(cfg.n_vocab, 2, 5, 23);
  auto loss = [&] {
    lora.merge_into(model.params);
    return model.loss(batch.tokens, batch.targets, batch.B, batch.T, {}, false);
  };
  lora.merge_into(model.params);
  model.zero_grads();
  model.loss(batch.tokens, batch.targets, batch.B, batch.T, {}, true);
  std::vector<double> d(lora.adapters.size());
  lora.gradients(model.grads, d);
  // Only the adapted matrices got gradients.
  const TensorSpec& emb = model.layout().at("emb.weight");
  for (size_t i = emb.offset; i < emb.offset + emb.numel; ++i) ASSERT_EQ(model.grads[i], 0.0);
  std::mt19937_64 pick(24);
  double largest = 0;
  for (int n = 0; n < 40; ++n) {
    const size_t i = pick() % d.size();
    const double saved = lora.adapters[i], h = 1e-5;
    lora.adapters[i] = saved + h;
    const double up = loss();
    lora.adapters[i] = saved - h;
    const double down = loss();
    lora.adapters[i] = saved;
    const double numeric = (up - down) / (2 * h);
    largest = std::max(largest, std::fabs(numeric));
    EXPECT_NEAR(d[i], numeric, 1e-7 + 1e-5 * std::fabs(numeric)) << "adapter element " << i;
  }
  EXPECT_GT(largest, 1e-4);
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

// ---- optimizer ---------------------------------------------------------------

TEST(TrainOptim, LearningRateWarmupThenCosineOrLinear) {
  OptimConfig c;
  c.lr_init = 1e-3;
  c.lr_final = 1e-4;
  c.warmup_steps = 10;
  c.total_steps = 110;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 1e-3 * 0.01);  // official warm-up starts at 1%
  EXPECT_DOUBLE_EQ(learning_rate(c, 5), 1e-3 * (0.01 + 0.99 * 0.5));
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1e-3);
  EXPECT_NEAR(learning_rate(c, 60), 0.5 * (1e-3 + 1e-4), 1e-15);  // cosine midpoint
  EXPECT_NEAR(learning_rate(c, 110), 1e-4, 1e-15);
  EXPECT_NEAR(learning_rate(c, 500), 1e-4, 1e-15);
  c.schedule = LrSchedule::Linear;
  EXPECT_NEAR(learning_rate(c, 35), 1e-3 - 0.25 * 9e-4, 1e-15);
  c.schedule = LrSchedule::Constant;
  EXPECT_DOUBLE_EQ(learning_rate(c, 80), 1e-3);
  EXPECT_THROW(parse_lr_schedule("exp"), Error);
}

// One AdamW step by hand: with bias correction the first update is
// lr * g / (|g| + eps) = lr sign(g); decay only in the decay group; a 2x group.
TEST(TrainOptim, AdamWStepWeightDecayGroupsAndClipping) {
  OptimConfig c;
  c.weight_decay = 0.1;
  c.grad_clip = 0.0;
  AdamW opt(c, {{0, 2, true, 1.0f}, {2, 2, false, 2.0f}}, 4);
  std::vector<float> p = {1.0f, -2.0f, 3.0f, 4.0f}, g = {0.5f, -0.25f, 2.0f, 0.0f};
  const double norm = opt.step(p, g, 0.01);
  EXPECT_NEAR(norm, std::sqrt(0.25 + 0.0625 + 4.0), 1e-6);
  EXPECT_NEAR(p[0], 1.0 - 0.01 * (1.0 + 0.1 * 1.0), 1e-6);
  EXPECT_NEAR(p[1], -2.0 - 0.01 * (-1.0 + 0.1 * -2.0), 1e-6);
  EXPECT_NEAR(p[2], 3.0 - 0.02 * 1.0, 1e-6);  // 2x learning rate, no decay
  EXPECT_EQ(p[3], 4.0f);                      // zero gradient, no decay: unchanged
  // Clipping scales the gradient by clip / norm before the moments see it.
  c.grad_clip = 1.0;
  c.weight_decay = 0.0;
  AdamW clipped(c, {{0, 1, false, 1.0f}}, 1);
  std::vector<float> q = {0.0f}, h = {10.0f};
  EXPECT_NEAR(clipped.step(q, h, 1.0), 10.0, 1e-9);
  EXPECT_NEAR(clipped.m[0], 0.1 * 10.0 * (1.0 / (10.0 + 1e-6)), 1e-6);
}

// ---- initialisation ------------------------------------------------------------

TEST(TrainInit, OfficialShapesValuesAndOrthogonality) {
  // Official RWKV-7 0.1B (L12 C768): LoRA ranks 64, 64, 32, 128.
  const TrainConfig big = TrainConfig::official(12, 768, 65536);
  EXPECT_EQ(big.lora_w, 64);
  EXPECT_EQ(big.lora_a, 64);
  EXPECT_EQ(big.lora_v, 32);
  EXPECT_EQ(big.lora_g, 128);
  EXPECT_EQ(big.dim_ffn, 3072);

  const TrainConfig c = TrainConfig::official(3, 64, 100, 16);
  const ParamLayout layout(c);
  std::vector<float> p(layout.size());
  init_official(layout, p, 7);
  auto t = [&](const std::string& name) { return p.data() + layout.at(name).offset; };
  const double C = 64;
  // layer 1 of 3: ratio_1_to_almost0 = 2/3, ratio_0_to_1 = 1/2
  EXPECT_NEAR(t("blocks.1.att.x_r")[10], 1.0 - std::pow(10 / C, 0.2 * 2.0 / 3), 1e-6);
  EXPECT_NEAR(t("blocks.1.att.x_w")[33], 1.0 - std::pow(33 / C, 0.9 * 2.0 / 3), 1e-6);
  EXPECT_NEAR(t("blocks.1.ffn.x_k")[5], 1.0 - std::pow(5 / C, std::pow(2.0 / 3, 4)), 1e-6);
  const int n = 37;  // head 2, position 5 of 16
  double zig = (5 - 7.5) / 7.5;
  zig *= std::fabs(zig);
  const double linear = n / (C - 1) - 0.5;
  EXPECT_NEAR(t("blocks.1.att.w0")[n], -6 + 6 * std::pow(n / (C - 1), 1 + std::pow(0.5, 0.3)) + 0.5 + zig * 2.5, 1e-5);
  EXPECT_NEAR(t("blocks.1.att.a0")[n], -0.19 + zig * 0.3 + linear * 0.4, 1e-6);
  EXPECT_NEAR(t("blocks.1.att.v0")[n], 0.73 - linear * 0.4, 1e-6);
  EXPECT_NEAR(t("blocks.1.att.k_k")[n], 0.71 - linear * 0.1, 1e-6);
  EXPECT_FLOAT_EQ(t("blocks.1.att.k_a")[n], 1.02f);
  EXPECT_FLOAT_EQ(t("blocks.1.att.r_k")[n], -0.04f);
  EXPECT_NEAR(t("blocks.1.att.ln_x.weight")[0], std::pow(2.0 / 3, 0.7), 1e-6);
  for (const char* zero :
       {"blocks.2.att.w1", "blocks.2.att.output.weight", "blocks.2.ffn.value.weight", "blocks.0.ln1.bias"}) {
    const TensorSpec& s = layout.at(zero);
    for (size_t i = 0; i < s.numel; ++i) ASSERT_EQ(p[s.offset + i], 0.0f) << zero;
  }
  for (size_t i = 0; i < layout.at("emb.weight").numel; ++i) ASSERT_LE(std::fabs(t("emb.weight")[i]), 1e-4f);
  // Orthogonal with the official gains: M M^T = gain^2 I over the shorter side.
  auto check_ortho = [&](const std::string& name, double gain) {
    const TensorSpec& s = layout.at(name);
    const int64_t rows = s.shape[0], cols = s.shape[1];
    const bool wide = rows <= cols;
    const int64_t k = wide ? rows : cols, len = wide ? cols : rows;
    const float* m = t(name);
    auto at = [&](int64_t vec, int64_t e) { return double(wide ? m[vec * cols + e] : m[e * cols + vec]); };
    double worst = 0;
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b) {
        double dot = 0;
        for (int64_t e = 0; e < len; ++e) dot += at(a, e) * at(b, e);
        worst = std::max(worst, std::fabs(dot - (a == b ? gain * gain : 0.0)));
      }
    EXPECT_LT(worst, 1e-5 * std::max(1.0, gain * gain)) << name;
  };
  check_ortho("blocks.0.att.receptance.weight", 1.0);
  check_ortho("blocks.0.att.key.weight", 0.1);
  check_ortho("blocks.1.att.w2", 0.1);          // [32, 64]: wide, gain 0.1
  check_ortho("blocks.1.ffn.key.weight", 1.0);  // [256, 64]: tall
  check_ortho("head.weight", 0.5 * std::sqrt(100.0 / 64));
  // The same seed gives the same model; another seed another one.
  std::vector<float> again(layout.size()), other(layout.size());
  init_official(layout, again, 7);
  init_official(layout, other, 8);
  EXPECT_EQ(p, again);
  EXPECT_NE(p, other);
}

// ---- data ----------------------------------------------------------------------

TEST(TrainData, JsonlDocumentsSplitAndDeterministicSamples) {
  test::TempDir dir;
  const std::string path = dir / "d.jsonl";
  {
    std::ofstream f(path);
    f << "{\"text\": \"abcdefghij\"}\n\n{\"text\": \"klmnopqrst\", \"meta\": 1}\n{\"text\": \"uvwxyz0123\"}\n";
  }
  ByteTokenizer bytes;
  const Corpus c = load_corpus(path, bytes, 0.3);
  EXPECT_EQ(c.n_docs, 3);
  EXPECT_EQ(c.train_docs, 2);  // the last document (11 of 33 tokens) is the validation split
  ASSERT_EQ(c.train.size(), 22u);
  EXPECT_EQ(c.train[10], 0);  // end of document after each one
  EXPECT_EQ(c.train[11], 'k');
  ASSERT_EQ(c.val.size(), 11u);
  EXPECT_EQ(c.val[0], 'u');
  Sampler s1(c.train, 5, 9), s2(c.train, 5, 9);
  EXPECT_EQ(s1.windows(), 4);
  std::vector<int32_t> in1(5), tg1(5), in2(5), tg2(5);
  std::set<int32_t> firsts;
  for (int64_t i = 0; i < 8; ++i) {
    s1.sample(i, in1.data(), tg1.data());
    s2.sample(7 - i, in2.data(), tg2.data());  // any order of asking gives the same samples
    s2.sample(i, in2.data(), tg2.data());
    EXPECT_EQ(in1, in2);
    EXPECT_EQ(std::vector<int32_t>(in1.begin() + 1, in1.end()), std::vector<int32_t>(tg1.begin(), tg1.end() - 1));
    if (i < 4) firsts.insert(in1[0]);
  }
  EXPECT_EQ(firsts.size(), 4u);  // an epoch visits every window once
  EXPECT_THROW(Sampler(c.train, 22, 1), Error);
}

// Writes RWKV-LM's binidx pair PREFIX.idx / PREFIX.bin (uint16 tokens) for
// `docs`, byte for byte as its MMapIndexedDataset writer lays them out.
void write_binidx(const std::string& prefix, const std::vector<std::vector<uint16_t>>& docs, uint8_t code = 8) {
  std::ofstream idx(prefix + ".idx", std::ios::binary), bin(prefix + ".bin", std::ios::binary);
  auto put = [&](const auto& v) { idx.write(reinterpret_cast<const char*>(&v), sizeof v); };
  idx.write("MMIDIDX\0\0", 9);
  put(uint64_t(1));
  put(code);
  put(uint64_t(docs.size()));
  put(uint64_t(docs.size() + 1));
  int64_t address = 0;
  std::vector<int64_t> pointers;
  for (const auto& d : docs) put(int32_t(d.size()));
  for (const auto& d : docs) {
    put(address);
    address += int64_t(d.size() * 2);
    bin.write(reinterpret_cast<const char*>(d.data()), std::streamsize(d.size() * 2));
  }
  for (size_t i = 0; i <= docs.size(); ++i) put(int64_t(i));
}

TEST(TrainData, BinidxEqualsTheSameDocumentsAsJsonl) {
  test::TempDir dir;
  const std::vector<std::string> texts = {"abcdefghij", "klmnopqrst", "uvwxyz0123"};
  std::vector<std::vector<uint16_t>> docs;
  {
    std::ofstream f(dir / "d.jsonl");
    for (const auto& t : texts) {
      f << "{\"text\": \"" << t << "\"}\n";
      docs.emplace_back(t.begin(), t.end());
      docs.back().push_back(0);  // make_data.py ends every document with 0
    }
  }
  write_binidx(dir / "d", docs);
  ByteTokenizer bytes;
  const Corpus from_jsonl = load_corpus(dir / "d.jsonl", bytes, 0.3);
  for (const std::string name : {"d", "d.bin", "d.idx"}) {
    const Corpus c = load_corpus(dir / name, bytes, 0.3);
    EXPECT_EQ(c.train, from_jsonl.train) << name;
    EXPECT_EQ(c.val, from_jsonl.val) << name;
    EXPECT_EQ(c.train_docs, 2) << name;
    EXPECT_EQ(c.hash, from_jsonl.hash) << name;
  }
}

TEST(TrainData, CorruptBinidxIsAClearError) {
  test::TempDir dir;
  ByteTokenizer bytes;
  const std::vector<std::vector<uint16_t>> docs = {{1, 2, 3, 0}, {4, 5, 0}};
  auto expect_error = [&](const std::string& prefix, const std::string& needle) {
    try {
      load_corpus(prefix, bytes, 0.0);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  write_binidx(dir / "ok", docs);
  std::string idx;
  {
    std::ifstream f(dir / "ok.idx", std::ios::binary);
    idx.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto variant = [&](const std::string& name, std::string idx_bytes, const std::string& bin_bytes) {
    std::ofstream(dir / (name + ".idx"), std::ios::binary) << idx_bytes;
    std::ofstream(dir / (name + ".bin"), std::ios::binary) << bin_bytes;
    return dir / name;
  };
  std::string bin;
  {
    std::ifstream f(dir / "ok.bin", std::ios::binary);
    bin.assign(std::istreambuf_iterator<char>(f), {});
  }
  std::string bad_magic = idx;
  bad_magic[0] = 'X';
  expect_error(variant("magic", bad_magic, bin), "bad magic");
  for (size_t cut : {size_t(5), size_t(20), size_t(30), idx.size() - 30})
    expect_error(variant("cut" + std::to_string(cut), idx.substr(0, cut), bin), "truncated");
  std::string huge = idx;
  const uint64_t absurd = uint64_t(1) << 60;
  std::memcpy(huge.data() + 18, &absurd, 8);
  expect_error(variant("huge", huge, bin), "more than the file can hold");
  std::string dtype = idx;
  dtype[17] = 6;  // float
  expect_error(variant("dtype", dtype, bin), "dtype code 6");
  expect_error(variant("short", idx, bin.substr(0, 8)), "outside");
  std::string big_token = bin;
  big_token[0] = char(0xff);
  big_token[1] = char(0x01);  // 511 >= 256
  expect_error(variant("vocab", idx, big_token), "outside the vocabulary");
}

// ---- the CLI ---------------------------------------------------------------------

std::string q(const std::string& s) { return "'" + s + "'"; }

// Writes a tiny bytes-vocabulary model (official init) and returns its path.
std::string tiny_pth(const test::TempDir& dir, const std::string& name = "tiny.pth", int64_t layers = 2) {
  const std::string path = dir / name;
  const auto r = test::run_cli("init -o " + q(path) + " --n-layer " + std::to_string(layers) +
                               " --n-embd 32 --vocab 256 --head-size 8 --seed 3");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return path;
}

std::vector<StepRecord> history(const std::string& out) {
  const TrainState st = load_train_state(train_state_path(out));
  std::vector<StepRecord> h;
  for (const auto& r : st.info.at("history")) h.push_back({r.at(0), r.at(1), r.at(2), r.at(3)});
  return h;
}

const char* kText = "RWKV is an RNN with transformer-level LLM performance. It can be directly trained like a GPT.";

TEST(TrainCli, TinyModelOverfitsAShortText) {
  test::TempDir dir;
  const std::string model = tiny_pth(dir), text = dir / "short.txt", out = dir / "of.pth";
  test::write_bytes(text, std::vector<char>(kText, kText + std::strlen(kText)));
  const auto r = test::run_cli("train -m " + q(model) + " --data " + q(text) +
                               " --tokenizer bytes --ctx-len 32 "
                               "--batch 4 --steps 80 --lr 1e-2 --lr-final 1e-3 --warmup 5 --val-fraction 0 -o " +
                               q(out) + " --log-every 20");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("tok/s"), std::string::npos);
  EXPECT_NE(r.output.find("ETA"), std::string::npos);
  const auto h = history(out);
  ASSERT_EQ(h.size(), 80u);
  EXPECT_GT(h.front().loss, 4.0);  // ~ln 256 at the start
  EXPECT_LT(h.back().loss, 0.02);  // memorised (measured: 0.0014)
  // The loss-curve chart was written.
  const auto svg = test::read_bytes(out + ".svg");
  EXPECT_NE(std::string(svg.begin(), svg.end()).find("<polyline"), std::string::npos);
  // Greedy generation from the trained model continues the text.
  const auto g = test::run_cli("generate -m " + q(out) +
                                   " --tokenizer bytes -p 'RWKV is an' -n 12 --temperature 0 "
                                   "--presence-penalty 0 --frequency-penalty 0",
                               true);
  EXPECT_EQ(g.output.substr(0, 12), " RNN with tr") << g.output;
}

TEST(TrainCli, LossDecreasesOnDemoJsonl) {
  test::TempDir dir;
  const std::string model = dir / "w.pth", out = dir / "w-out.pth";
  ASSERT_EQ(test::run_cli("init -o " + q(model) + " --n-layer 1 --n-embd 16 --vocab 65536 --head-size 8").exit_code, 0);
  const auto r = test::run_cli("train -m " + q(model) + " --data " + q(test::shared_path("data/demo.jsonl")) +
                               " --tokenizer " + q(test::shared_path("tokenizers/rwkv_vocab_v20230424.txt")) +
                               " --ctx-len 32 --batch 2 --steps 4 --lr 1e-2 --warmup 0 --val-batches 1 -o " + q(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const TrainState st = load_train_state(train_state_path(out));
  const auto& val = st.info.at("val");
  ASSERT_GE(val.size(), 2u);
  EXPECT_EQ(val.front().at(0).get<int64_t>(), 0);
  EXPECT_LT(val.back().at(1).get<double>(), val.front().at(1).get<double>() - 0.1) << r.output;
  const auto h = history(out);
  EXPECT_LT(h.back().loss, h.front().loss) << r.output;
}

// A run stopped after 4 of 10 steps and resumed gives exactly the losses,
// weights and optimizer state of the uninterrupted run.
TEST(TrainCli, ResumeReproducesTheUninterruptedRun) {
  test::TempDir dir;
  const std::string model = tiny_pth(dir), text = dir / "t.txt";
  std::string data;
  for (int i = 0; i < 6; ++i) data += kText;
  test::write_bytes(text, std::vector<char>(data.begin(), data.end()));
  const std::string common = "train -m " + q(model) + " --data " + q(text) + " --tokenizer bytes --ctx-len 16 " +
                             "--batch 3 --accumulate 2 --steps 10 --lr 3e-3 --warmup 2 --val-every 3 ";
  const std::string a = dir / "a.pth", b = dir / "b.pth";
  ASSERT_EQ(test::run_cli(common + "-o " + q(a)).exit_code, 0);
  auto r = test::run_cli(common + "-o " + q(b) + " --stop-after 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--resume"), std::string::npos) << r.output;
  EXPECT_EQ(history(b).size(), 4u);
  r = test::run_cli(common + "-o " + q(b) + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ha = history(a), hb = history(b);
  ASSERT_EQ(ha.size(), 10u);
  ASSERT_EQ(hb.size(), 10u);
  for (size_t i = 0; i < ha.size(); ++i) {
    EXPECT_EQ(ha[i].loss, hb[i].loss) << "step " << i + 1;
    EXPECT_EQ(ha[i].grad_norm, hb[i].grad_norm) << "step " << i + 1;
  }
  const TrainState sa = load_train_state(train_state_path(a)), sb = load_train_state(train_state_path(b));
  EXPECT_EQ(sa.info.at("val"), sb.info.at("val"));
  EXPECT_EQ(sa.arrays, sb.arrays);
  // The .pth files hold the same tensors (their zip folder names differ: torch.save uses the file stem).
  const auto pa = open_tensor_archive(a), pb = open_tensor_archive(b);
  ASSERT_EQ(pa->tensors().size(), pb->tensors().size());
  for (const TensorInfo& t : pa->tensors()) {
    const TensorInfo* u = pb->find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    ASSERT_EQ(t.nbytes, u->nbytes);
    EXPECT_EQ(std::memcmp(t.data, u->data, t.nbytes), 0) << t.name;
  }
  // Resuming with other settings is refused, naming the setting.
  r = test::run_cli(common + "-o " + q(b) + " --resume --seed 7");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("cannot resume: seed was"), std::string::npos) << r.output;
}

// The trained .pth loads in the engine and gives the trainer's logits; fp32
// saves are the master weights exactly, bf16 saves their rounding.
TEST(TrainCli, TrainedCheckpointLoadsInTheEngine) {
  test::TempDir dir;
  const std::string model = tiny_pth(dir), text = dir / "t.txt", out = dir / "o.pth", out16 = dir / "o16.pth";
  test::write_bytes(text, std::vector<char>(kText, kText + std::strlen(kText)));
  const std::string common =
      "train -m " + q(model) + " --data " + q(text) + " --tokenizer bytes --ctx-len 16 --batch 2 --steps 5 --lr 1e-2 ";
  ASSERT_EQ(test::run_cli(common + "-o " + q(out)).exit_code, 0);
  ASSERT_EQ(test::run_cli(common + "-o " + q(out16) + " --save-dtype bf16").exit_code, 0);

  const auto archive = open_tensor_archive(out);
  TrainModel<float> trainer(infer_config(*archive), 16);
  load_params(*archive, trainer.layout(), trainer.params);
  EXPECT_EQ(trainer.params, load_train_state(train_state_path(out)).arrays.at("trained"));
  const auto archive16 = open_tensor_archive(out16);
  std::vector<float> w16(trainer.layout().size());
  load_params(*archive16, trainer.layout(), w16);
  for (size_t i = 0; i < w16.size(); ++i) ASSERT_EQ(w16[i], bf16_to_f32(f32_to_bf16(trainer.params[i])));

  std::vector<int32_t> tokens;
  for (const char* p = kText; *p && tokens.size() < 20; ++p) tokens.push_back(uint8_t(*p));
  std::vector<float> ours(tokens.size() * 256);
  trainer.forward_logits(tokens, 1, int64_t(tokens.size()), ours.data());
  const auto engine = load_model(out);
  State state = engine->new_state();
  std::vector<float> theirs(ours.size());
  engine->forward(tokens, state, Logits::All, theirs);
  float scale = 0;
  for (float x : theirs) scale = std::max(scale, std::fabs(x));
  EXPECT_LE(test::max_abs_diff(ours, theirs), 2e-5f * (1.0f + scale));  // as LogitsEqualTheInferenceEngine
}

// State tuning trains only the initial state; the result is a state file that
// generate --state-in reads, and it lowers the loss.
TEST(TrainCli, StateTuningWritesAStateFile) {
  test::TempDir dir;
  const std::string init = tiny_pth(dir), text = dir / "t.txt", model = dir / "base.pth", out = dir / "tuned.state";
  test::write_bytes(text, std::vector<char>(kText, kText + std::strlen(kText)));
  // A freshly initialised model ignores its state (zero output projections),
  // so first train it briefly on other text.
  const std::string other = dir / "other.txt", other_text = "abcdefghijklmnopqrstuvwxyz 0123456789 ";
  test::write_bytes(other, std::vector<char>(other_text.begin(), other_text.end()));
  ASSERT_EQ(test::run_cli("train -m " + q(init) + " --data " + q(other) + " --tokenizer bytes --ctx-len 16 " +
                          "--steps 30 --lr 1e-2 --val-fraction 0 -o " + q(model))
                .exit_code,
            0);
  const auto before = test::read_bytes(model);
  const auto r = test::run_cli("train --mode state -m " + q(model) + " --data " + q(text) +
                               " --tokenizer bytes --ctx-len 16 --batch 5 --steps 30 --lr 1 --warmup 0 "
                               "--val-fraction 0 -o " +
                               q(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Each batch is all 5 windows of the text, so the losses are comparable
  // (measured: 7.12 at step 1, 6.89 at step 30).
  const auto h = history(out);
  EXPECT_LT(h.back().loss, h.front().loss - 0.1) << r.output;
  EXPECT_EQ(test::read_bytes(model), before);
  const auto engine = load_model(model);
  const StateFile sf = load_state_file(out, engine->state_shape(), engine->state_size());
  double energy = 0;
  for (float x : sf.state.data()) energy += double(x) * x;
  EXPECT_GT(energy, 0.0);
  const auto g = test::run_cli("generate -m " + q(model) + " --tokenizer bytes --state-in " + q(out) +
                               " -p R -n 4 --temperature 0");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  // RWKV-PEFT's layout beside it: blocks.N.att.time_state [H, N, N], the wkv
  // part of each layer's state (between the two token-shift vectors).
  const auto peft = open_tensor_archive(out + ".pth");
  const auto& cfg = engine->config();
  const int64_t C = cfg.n_embd, H = cfg.n_head, N = cfg.head_size, per_layer = 2 * C + H * N * N;
  ASSERT_EQ(peft->tensors().size(), size_t(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const TensorInfo* t = peft->find("blocks." + std::to_string(l) + ".att.time_state");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, (std::vector<int64_t>{H, N, N}));
    ASSERT_EQ(t->dtype, DType::F32);
    EXPECT_EQ(std::memcmp(t->data, sf.state.data().data() + l * per_layer + C, size_t(H * N * N) * 4), 0);
  }
}

TEST(TrainCli, BadInputIsAClearError) {
  test::TempDir dir;
  const std::string model = tiny_pth(dir), text = dir / "t.txt", out = dir / "o.pth";
  test::write_bytes(text, std::vector<char>(kText, kText + std::strlen(kText)));
  auto expect_error = [&](const std::string& args, const std::string& message) {
    const auto r = test::run_cli("train -m " + q(model) + " --tokenizer bytes -o " + q(out) + " " + args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << args;
  };
  expect_error("--data " + q(dir / "missing.jsonl"), "cannot open data file");
  const std::string empty = dir / "empty.jsonl";
  test::write_bytes(empty, {'\n', ' ', '\n'});
  expect_error("--data " + q(empty), "no training text");
  const std::string blank = dir / "blank.jsonl";
  const std::string blank_text = "{\"text\": \"\"}\n";
  test::write_bytes(blank, std::vector<char>(blank_text.begin(), blank_text.end()));
  expect_error("--data " + q(blank), "no training text");
  const std::string bad = dir / "bad.jsonl";
  const std::string bad_text = "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n";
  test::write_bytes(bad, std::vector<char>(bad_text.begin(), bad_text.end()));
  expect_error("--data " + q(bad), "bad.jsonl:2: expected an object with a string \"text\" field");
  // ctx-len larger than the whole training split (every document is shorter still)
  expect_error("--data " + q(text) + " --ctx-len 512", "ctx-len 512 is larger than the training data");
  // a state file of another model shape
  const std::string other = tiny_pth(dir, "other.pth", 1), other_state = dir / "other.state";
  ASSERT_EQ(test::run_cli("train --mode state -m " + q(other) + " --data " + q(text) +
                          " --tokenizer bytes --ctx-len 16 --steps 1 -o " + q(other_state))
                .exit_code,
            0);
  expect_error("--mode state --data " + q(text) + " --ctx-len 16 --state-in " + q(other_state),
               "saved for another model");
  // resuming a run of another model shape
  ASSERT_EQ(test::run_cli("train -m " + q(other) + " --data " + q(text) +
                          " --tokenizer bytes --ctx-len 16 "
                          "--steps 2 --stop-after 1 -o " +
                          q(dir / "r.pth"))
                .exit_code,
            0);
  const auto r = test::run_cli("train -m " + q(model) + " --data " + q(text) +
                               " --tokenizer bytes --ctx-len 16 "
                               "--steps 2 --resume -o " +
                               q(dir / "r.pth"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("cannot resume: model was"), std::string::npos) << r.output;
  // not an RWKV-7 .pth
  const auto v4 = test::run_cli("train -m " + q(test::tiny_model("4v0-660K", "FP32")) + " --data " + q(text) +
                                " --tokenizer bytes -o " + q(out));
  EXPECT_EQ(v4.exit_code, 1);
  EXPECT_NE(v4.output.find("official-layout .pth"), std::string::npos) << v4.output;
}

}  // namespace
}  // namespace rwkv::train

namespace rwkv::train {
namespace {

// LoRA training lowers the loss, writes only adapters, and lora-merge gives a
// checkpoint whose engine logits are the trainer's on the merged weights.
TEST(TrainCli, LoraTrainsAndMerges) {
  test::TempDir dir;
  const std::string model = tiny_pth(dir), text = dir / "t.txt", adapter = dir / "ad.pth", merged = dir / "m.pth";
  test::write_bytes(text, std::vector<char>(kText, kText + std::strlen(kText)));
  const auto r = test::run_cli("train --mode lora --lora-rank 4 --lora-alpha 8 -m " + q(model) + " --data " + q(text) +
                               " --tokenizer bytes --ctx-len 16 --batch 5 --steps 20 --lr 1e-2 --warmup 0 "
                               "--val-fraction 0 -o " +
                               q(adapter));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto h = history(adapter);
  EXPECT_LT(h.back().loss, h.front().loss - 0.5) << r.output;
  const auto ad = open_tensor_archive(adapter);
  EXPECT_EQ(ad->tensors().size(), 2u * 6u * 2u + 1u);  // A and B for 6 matrices x 2 layers, lora_alpha
  ASSERT_NE(ad->find("blocks.1.ffn.value.lora_B"), nullptr);
  EXPECT_EQ(ad->find("blocks.1.ffn.value.lora_B")->shape, (std::vector<int64_t>{32, 4}));

  const auto m = test::run_cli("lora-merge -m " + q(model) + " --lora " + q(adapter) + " -o " + q(merged));
  ASSERT_EQ(m.exit_code, 0) << m.output;
  // The trainer's merged weights, from the base and the adapters it saved.
  const auto base = open_tensor_archive(model);
  TrainModel<float> trainer(infer_config(*base), 16);
  load_params(*base, trainer.layout(), trainer.params);
  Lora<float> lora(trainer.layout(), 4, 8.0, trainer.params);
  lora.adapters = load_train_state(train_state_path(adapter)).arrays.at("trained");
  lora.merge_into(trainer.params);
  std::vector<float> from_file(trainer.layout().size());
  load_params(*open_tensor_archive(merged), trainer.layout(), from_file);
  double worst = 0;
  for (size_t i = 0; i < from_file.size(); ++i)
    worst = std::max(worst, double(std::fabs(from_file[i] - trainer.params[i])));
  EXPECT_LE(worst, 1e-6);  // the same float32 products; only the scale's rounding may differ
  std::vector<int32_t> tokens;
  for (const char* p = kText; *p && tokens.size() < 20; ++p) tokens.push_back(uint8_t(*p));
  std::vector<float> ours(tokens.size() * 256), theirs(tokens.size() * 256);
  trainer.forward_logits(tokens, 1, int64_t(tokens.size()), ours.data());
  const auto engine = load_model(merged);
  State state = engine->new_state();
  engine->forward(tokens, state, Logits::All, theirs);
  float scale = 0;
  for (float x : theirs) scale = std::max(scale, std::fabs(x));
  EXPECT_LE(test::max_abs_diff(ours, theirs), 2e-5f * (1.0f + scale));
  // Adapters for another shape are refused.
  const std::string other = tiny_pth(dir, "other.pth", 1);
  const auto bad = test::run_cli("lora-merge -m " + q(other) + " --lora " + q(adapter) + " -o " + q(dir / "x.pth"));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("does not have"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace rwkv::train

namespace rwkv::train {
namespace {

// Two processes under mpirun with 1 sequence each take the steps one process
// takes with 2 sequences: the same samples, gradients averaged. Losses agree
// to float rounding (the sums run in another order): 1e-5 relative.
TEST(TrainCli, MpiDataParallelEqualsOneProcess) {
  if (!built_with_mpi() || std::system("command -v mpirun > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "not built with MPI, or no mpirun";
  test::TempDir dir;
  const std::string model = tiny_pth(dir), text = dir / "t.txt";
  std::string data;
  for (int i = 0; i < 4; ++i) data += kText;
  test::write_bytes(text, std::vector<char>(data.begin(), data.end()));
  const std::string args = " train -m " + q(model) + " --data " + q(text) +
                           " --tokenizer bytes --ctx-len 16 --steps 6 --lr 3e-3 --warmup 2 --val-every 3 ";
  const std::string one = dir / "one.pth", two = dir / "two.pth";
  ASSERT_EQ(test::run_cli(args + "--batch 2 -o " + q(one)).exit_code, 0);
  // mpirun refuses root unless told; --oversubscribe allows more processes than cores.
  // OpenMPI's own allocations outlive MPI_Finalize, which LeakSanitizer (in
  // sanitizer builds) would report as the program's leaks.
  const std::string command =
      "ASAN_OPTIONS=detect_leaks=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe " +
      std::string(RWKV_CLI_PATH) + args + "--batch 1 -o " + q(two) + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  ASSERT_EQ(::pclose(pipe), 0) << output;
  EXPECT_NE(output.find("data parallel over 2 processes"), std::string::npos) << output;
  const auto h1 = history(one), h2 = history(two);
  ASSERT_EQ(h1.size(), 6u);
  ASSERT_EQ(h2.size(), 6u);
  for (size_t i = 0; i < h1.size(); ++i) EXPECT_NEAR(h1[i].loss, h2[i].loss, 1e-5 * h1[i].loss) << "step " << i + 1;
}

}  // namespace
}  // namespace rwkv::train

namespace rwkv::train {
namespace {

TEST(TrainCli, BenchTrainReportsTokensPerSecond) {
  const auto r = test::run_cli(
      "bench --train --json --n-layer 1 --n-embd 32 --head-size 8 --vocab 64 --ctx-len 16 --train-batch 2 --steps 1",
      true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("mode"), "train");
  EXPECT_EQ(j.at("batch"), 2);
  EXPECT_EQ(j.at("ctx_len"), 16);
  EXPECT_GT(j.at("train_tokens_per_s").get<double>(), 0.0);
  // A random model on random tokens starts near ln(vocab).
  EXPECT_NEAR(j.at("loss").get<double>(), std::log(64.0), 1.0);
  EXPECT_NE(test::run_cli("bench --train -m x.pth").exit_code, 0);
  EXPECT_NE(test::run_cli("bench").exit_code, 0);
}

}  // namespace
}  // namespace rwkv::train
