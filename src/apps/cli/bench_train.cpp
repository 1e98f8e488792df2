#include "apps/cli/bench_train.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "train/init.h"
#include "train/model.h"
#include "train/optimizer.h"

namespace rwkv::cli {

int run_train_bench(const TrainBenchOptions& o) {
  using Clock = std::chrono::steady_clock;
  if (o.steps < 1) fail("--steps must be at least 1 (got {})", o.steps);
  const train::TrainConfig cfg = train::TrainConfig::official(o.n_layer, o.n_embd, o.vocab, o.head_size);
  cfg.validate();
  train::TrainModel<float> model(cfg);
  train::init_official(model.layout(), model.params, 1);
  std::vector<train::ParamGroup> groups;
  for (const train::TensorSpec& s : model.layout().tensors()) groups.push_back({s.offset, s.numel, s.decay, s.lr_scale});
  train::OptimConfig optim;
  optim.total_steps = o.steps + 1;
  train::AdamW optimizer(optim, groups, model.params.size());

  // Random tokens: the speed of a step does not depend on the text.
  const int64_t B = o.batch, T = o.ctx_len;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> token(0, int32_t(o.vocab - 1));
  std::vector<int32_t> seq(size_t(B * (T + 1)));
  for (int32_t& t : seq) t = token(rng);
  std::vector<int32_t> inputs(size_t(B * T)), targets(size_t(B * T));
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(&seq[size_t(b * (T + 1))], T, &inputs[size_t(b * T)]);
    std::copy_n(&seq[size_t(b * (T + 1) + 1)], T, &targets[size_t(b * T)]);
  }

  std::vector<double> step_seconds;
  double loss = 0.0;
  for (int64_t step = 0; step <= o.steps; ++step) {  // step 0 warms up (allocations, caches)
    const auto start = Clock::now();
    model.zero_grads();
    loss = model.loss(inputs, targets, B, T, train::LossOptions{.l2wrap = true}, true) ;
    optimizer.step(model.params, model.grads, train::learning_rate(optim, step));
    if (step > 0) step_seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  double total = 0.0;
  for (double s : step_seconds) total += s;
  const double per_step = total / double(step_seconds.size());
  const double tokens_per_s = double(B * T) / per_step;
  const int threads = num_threads();
  if (o.json) {
    const nlohmann::json j = {{"mode", "train"},
                              {"n_layer", o.n_layer},
                              {"n_embd", o.n_embd},
                              {"head_size", o.head_size},
                              {"n_vocab", o.vocab},
                              {"parameters", model.params.size()},
                              {"ctx_len", T},
                              {"batch", B},
                              {"threads", threads},
                              {"simd", current_simd_target().name},
                              {"steps", o.steps},
                              {"seconds_per_step", per_step},
                              {"train_tokens_per_s", tokens_per_s},
                              {"loss", loss}};
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("model:     RWKV-7 {} ({} parameters), random init, random tokens\n", cfg.describe(),
             model.params.size());
  fmt::print("machine:   {}; {} threads\n", cpu_summary(), threads);
  fmt::print("train:     batch {} x ctx {}: {:.3f} s/step (forward, backward, AdamW; mean of {}) = {:.1f} tokens/s\n",
             B, T, per_step, o.steps, tokens_per_s);
  return 0;
}

}  // namespace rwkv::cli
