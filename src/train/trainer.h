// The training loop behind `rwkv train`: data, model, AdamW, validation,
// progress, checkpoints with a resumable companion file, loss-curve SVG.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "train/optimizer.h"

namespace rwkv::train {

enum class TrainMode {
  Full,   // every parameter
  State,  // only the initial state (state tuning); the output is a state file
  Lora,   // LoRA adapters on the projections; the output is an adapter .pth
};
TrainMode parse_train_mode(const std::string& name);  // "full" | "state" | "lora"

struct TrainOptions {
  std::string model;      // input checkpoint (official .pth layout)
  std::string data;       // .jsonl with "text" fields, or a plain text file
  std::string tokenizer;  // "world", "bytes", a path; empty: from the vocabulary size
  std::string output;     // .pth (full), state file (state), adapter .pth (lora); companion: output + ".trainstate"
  TrainMode mode = TrainMode::Full;
  int64_t ctx_len = 512;
  int64_t batch = 4;       // sequences per micro-batch
  int64_t accumulate = 1;  // micro-batches per optimizer step
  int64_t steps = 100;     // optimizer steps in the whole run
  OptimConfig optim;       // total_steps is set from `steps`
  bool l2wrap = true;
  uint64_t seed = 42;
  double val_fraction = 0.05;
  int64_t val_every = 0;    // steps between validations; 0: about 10 per run
  int64_t val_batches = 8;  // at most this many batches of validation windows
  int64_t save_every = 0;   // steps between checkpoints; 0: only at the end
  int64_t stop_after = 0;   // stop (with a checkpoint) after this many steps of this invocation; 0: never
  bool resume = false;      // continue from output's companion file
  DType save_dtype = DType::F32;
  std::string svg;         // loss curves; empty: output + ".svg"
  int64_t chunk_len = 16;  // wkv states kept every chunk_len tokens
  int64_t log_every = 1;
  std::string state_in;  // state mode: start from this state file instead of zeros
  int64_t lora_rank = 32;
  double lora_alpha = 32;
};

struct StepRecord {
  int64_t step = 0;  // 1-based: the loss of the batch that optimizer step `step` used
  double loss = 0, lr = 0, grad_norm = 0;
};
struct ValRecord {
  int64_t step = 0;
  double loss = 0;
};

struct TrainReport {
  std::vector<StepRecord> train;  // the whole run's history, resumed parts included
  std::vector<ValRecord> val;
  int64_t steps_done = 0;
  bool finished = false;  // reached `steps` (not stopped early or interrupted)
};

// Runs (or resumes) training; progress lines go to `log` (stderr in the CLI).
// Errors in the inputs are rwkv::Error. SIGINT finishes the current step,
// writes a checkpoint and returns (finished = false).
TrainReport run_training(TrainOptions options, std::FILE* log);

}  // namespace rwkv::train
