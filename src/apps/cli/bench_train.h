// rwkv bench --train: training speed (forward, backward and AdamW step) of a
// freshly initialised RWKV-7 of a given shape on random tokens.
#pragma once

#include <cstdint>

namespace rwkv::cli {

struct TrainBenchOptions {
  int64_t n_layer = 6;
  int64_t n_embd = 512;
  int64_t head_size = 64;
  int64_t vocab = 65536;
  int64_t ctx_len = 512;
  int64_t batch = 1;
  int64_t steps = 3;  // timed steps, after one untimed warm-up step
  bool json = false;
};

int run_train_bench(const TrainBenchOptions& o);

}  // namespace rwkv::cli
