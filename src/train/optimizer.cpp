#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "train/parallel.h"

namespace rwkv::train {

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "cosine") return LrSchedule::Cosine;
  if (name == "linear") return LrSchedule::Linear;
  if (name == "constant") return LrSchedule::Constant;
  fail("unknown learning-rate schedule '{}' (cosine, linear or constant)", name);
}

std::string lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::Cosine:
      return "cosine";
    case LrSchedule::Linear:
      return "linear";
    case LrSchedule::Constant:
      return "constant";
  }
  return "?";
}

double learning_rate(const OptimConfig& c, int64_t step) {
  double lr = c.lr_init;
  if (c.schedule != LrSchedule::Constant) {
    const double span = double(std::max<int64_t>(1, c.total_steps - c.warmup_steps));
    const double progress = std::clamp(double(step - c.warmup_steps) / span, 0.0, 1.0);
    if (c.schedule == LrSchedule::Cosine) {
      const double f = c.lr_init > 0 ? c.lr_final / c.lr_init : 0.0;
      lr = c.lr_init * ((0.5 + f / 2) + (0.5 - f / 2) * std::cos(std::numbers::pi * progress));
    } else {
      lr = c.lr_init + (c.lr_final - c.lr_init) * progress;
    }
  }
  if (step < c.warmup_steps) lr *= 0.01 + 0.99 * double(step) / double(c.warmup_steps);
  return lr;
}

AdamW::AdamW(OptimConfig config, std::vector<ParamGroup> groups, size_t n_params)
    : m(n_params, 0.0f), v(n_params, 0.0f), config_(config), groups_(std::move(groups)) {
  for (const ParamGroup& g : groups_)
    if (g.offset + g.count > n_params)
      fail("optimizer group [{}, +{}) past {} parameters", g.offset, g.count, n_params);
}

double AdamW::step(std::span<float> params, std::span<float> grads, double lr) {
  // Work in fixed blocks so the threads' partial sums, and so the norm, do
  // not depend on the number of threads (resumed runs must be bit-identical).
  constexpr size_t kBlock = 1 << 16;
  struct Block {
    size_t begin, end;
    const ParamGroup* group;
  };
  std::vector<Block> blocks;
  for (const ParamGroup& g : groups_)
    for (size_t b = g.offset; b < g.offset + g.count; b += kBlock)
      blocks.push_back({b, std::min(b + kBlock, g.offset + g.count), &g});
  std::vector<double> partial(blocks.size(), 0.0);
  parallel_for(int64_t(blocks.size()), [&](int64_t i) {
    double sq = 0.0;
    for (size_t j = blocks[size_t(i)].begin; j < blocks[size_t(i)].end; ++j) sq += double(grads[j]) * double(grads[j]);
    partial[size_t(i)] = sq;
  });
  double sq = 0.0;
  for (double p : partial) sq += p;
  const double norm = std::sqrt(sq);
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  double clip = 1.0;
  if (config_.grad_clip > 0 && norm > config_.grad_clip) clip = config_.grad_clip / (norm + 1e-6);
  ++steps_taken;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(steps_taken));
  const double c2 = 1.0 - std::pow(b2, double(steps_taken));
  parallel_for(int64_t(blocks.size()), [&](int64_t bi) {
    const Block& blk = blocks[size_t(bi)];
    const double glr = lr * blk.group->lr_scale;
    const double wd = blk.group->decay ? config_.weight_decay : 0.0;
    for (size_t i = blk.begin; i < blk.end; ++i) {
      const double grad = double(grads[i]) * clip;
      const double mi = b1 * double(m[i]) + (1 - b1) * grad;
      const double vi = b2 * double(v[i]) + (1 - b2) * grad * grad;
      m[i] = float(mi);
      v[i] = float(vi);
      // DeepSpeed FusedAdam with adam_w_mode: p -= lr (m^ / (sqrt(v^) + eps) + wd p)
      const double update = (mi / c1) / (std::sqrt(vi / c2) + config_.eps) + wd * double(params[i]);
      params[i] = float(double(params[i]) - glr * update);
    }
  });
  return norm;
}

}  // namespace rwkv::train
