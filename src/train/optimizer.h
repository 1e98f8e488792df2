// AdamW and the learning-rate schedule as the official RWKV-7 trainer
// configures them (RWKV-LM RWKV-v7/train_temp: train.py defaults, trainer.py
// schedule, model.py optimizer groups): betas (0.9, 0.99), eps 1e-18, bias
// correction, decoupled weight decay only on the "decay" group, gradient
// clipping by global L2 norm (Lightning's gradient_clip_val, default 1.0).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rwkv::train {

enum class LrSchedule { Cosine, Linear, Constant };
LrSchedule parse_lr_schedule(const std::string& name);  // "cosine" | "linear" | "constant"
std::string lr_schedule_name(LrSchedule s);

struct OptimConfig {
  double lr_init = 6e-4;
  double lr_final = 1e-5;
  int64_t warmup_steps = 10;
  int64_t total_steps = 1;
  LrSchedule schedule = LrSchedule::Cosine;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double eps = 1e-18;
  double weight_decay = 0.0;
  double grad_clip = 1.0;  // 0: no clipping
};

// The learning rate of optimizer step `step` (0-based): the schedule from
// lr_init to lr_final over the steps after warm-up (cosine as the official
// trainer's token-based one), times 0.01 + 0.99 step / warmup during warm-up.
double learning_rate(const OptimConfig& config, int64_t step);

// A contiguous range of the parameter buffer with its weight decay and LR scale.
struct ParamGroup {
  size_t offset = 0;
  size_t count = 0;
  bool decay = false;
  float lr_scale = 1.0f;
};

class AdamW {
 public:
  AdamW(OptimConfig config, std::vector<ParamGroup> groups, size_t n_params);

  const OptimConfig& config() const { return config_; }
  // Clips `grads` (over the groups) to the global norm grad_clip, then updates
  // `params` with learning rate lr. Returns the norm before clipping.
  double step(std::span<float> params, std::span<float> grads, double lr);

  int64_t steps_taken = 0;
  std::vector<float> m, v;  // moments, same layout as the parameters

 private:
  OptimConfig config_;
  std::vector<ParamGroup> groups_;
};

}  // namespace rwkv::train
