// rwkv train: trains an RWKV-7 checkpoint (every parameter, or only the
// initial state) on a .jsonl or text file, with resumable checkpoints.
#include <cstdio>
#include <memory>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/error.h"
#include "train/lora.h"
#include "train/trainer.h"

namespace rwkv::cli {
namespace {

struct TrainFlags {
  train::TrainOptions o;
  std::string mode = "full";
  std::string schedule = "cosine";
  std::string save_dtype = "fp32";
  bool no_l2wrap = false;
};

int run_train(TrainFlags& f) {
  f.o.mode = train::parse_train_mode(f.mode);
  f.o.optim.schedule = train::parse_lr_schedule(f.schedule);
  f.o.save_dtype = f.save_dtype == "bf16" ? DType::BF16 : DType::F32;
  f.o.l2wrap = !f.no_l2wrap;
  // Stopping early (--stop-after, Ctrl-C) is not a failure: the checkpoint is written.
  train::run_training(f.o, stderr);
  return 0;
}

}  // namespace

Runner add_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train an RWKV-7 model (or its initial state) on text");
  auto f = std::make_shared<TrainFlags>();
  train::TrainOptions& o = f->o;
  cmd->add_option("-m,--model", o.model, "Starting checkpoint (official RWKV-7 .pth; see rwkv init)")->required();
  cmd->add_option("--data", o.data, "Training data: .jsonl with a \"text\" field per line, a plain text file, or RWKV-LM binidx (PREFIX[.bin|.idx])")
      ->required();
  add_tokenizer_flag(*cmd, o.tokenizer);
  cmd->add_option("-o,--output", o.output,
                  "Output: .pth checkpoint (full), state file (state) or adapter .pth (lora); OUT.trainstate beside it "
                  "for --resume")
      ->required();
  cmd->add_option("--mode", f->mode,
                  "full: every parameter; state: only the initial state (state tuning); lora: LoRA adapters")
      ->capture_default_str()
      ->check(CLI::IsMember({"full", "state", "lora"}));
  cmd->add_option("--lora-rank", o.lora_rank, "--mode lora: adapter rank")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--lora-alpha", o.lora_alpha, "--mode lora: adapters scale by alpha / rank")->capture_default_str();
  cmd->add_option("--ctx-len", o.ctx_len, "Tokens per sequence")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o.batch, "Sequences per micro-batch")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--accumulate", o.accumulate, "Micro-batches per optimizer step (gradient accumulation)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--steps", o.steps, "Optimizer steps of the whole run")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o.optim.lr_init, "Initial learning rate (after warm-up)")->capture_default_str();
  cmd->add_option("--lr-final", o.optim.lr_final, "Final learning rate")->capture_default_str();
  cmd->add_option("--lr-schedule", f->schedule, "Decay after warm-up")
      ->capture_default_str()
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  cmd->add_option("--warmup", o.optim.warmup_steps, "Warm-up steps (LR from 1% to 100%)")->capture_default_str();
  cmd->add_option("--beta1", o.optim.beta1, "Adam beta1")->capture_default_str();
  cmd->add_option("--beta2", o.optim.beta2, "Adam beta2")->capture_default_str();
  cmd->add_option("--adam-eps", o.optim.eps, "Adam epsilon")->capture_default_str();
  cmd->add_option("--weight-decay", o.optim.weight_decay, "AdamW weight decay (matrices named *.weight only)")
      ->capture_default_str();
  cmd->add_option("--grad-clip", o.optim.grad_clip, "Clip the gradient's global L2 norm (0: off)")
      ->capture_default_str();
  cmd->add_flag("--no-l2wrap", f->no_l2wrap, "Turn off the official L2-wrap of the largest logit");
  cmd->add_option("--seed", o.seed, "Seed of the sample order")->capture_default_str();
  cmd->add_option("--val-fraction", o.val_fraction, "Share of the data held out for validation")->capture_default_str();
  cmd->add_option("--val-every", o.val_every, "Steps between validations (0: about 10 per run)")->capture_default_str();
  cmd->add_option("--val-batches", o.val_batches, "Batches of validation windows evaluated at most")
      ->capture_default_str();
  cmd->add_option("--save-every", o.save_every, "Steps between checkpoints (0: at the end only)")
      ->capture_default_str();
  cmd->add_option("--stop-after", o.stop_after, "Stop after this many steps of this run, with a checkpoint")
      ->capture_default_str();
  cmd->add_flag("--resume", o.resume, "Continue the run saved in OUT.trainstate exactly");
  cmd->add_option("--save-dtype", f->save_dtype, "Type of the saved .pth weights")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--svg", o.svg, "Loss-curve chart (default: OUT.svg)");
  cmd->add_option("--chunk", o.chunk_len, "Tokens between stored wkv states in the backward pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--log-every", o.log_every, "Steps between progress lines")->capture_default_str();
  cmd->add_option("--state-in", o.state_in, "--mode state: start from this state file instead of zeros");
  return [f] { return run_train(*f); };
}

Runner add_lora_merge(CLI::App& app) {
  auto* cmd = app.add_subcommand("lora-merge", "Merge LoRA adapters (from rwkv train --mode lora) into a checkpoint");
  struct Flags {
    std::string model, lora, output, dtype = "fp32";
  };
  auto f = std::make_shared<Flags>();
  cmd->add_option("-m,--model", f->model, "Base checkpoint the adapters were trained on")->required();
  cmd->add_option("--lora", f->lora, "Adapter .pth")->required();
  cmd->add_option("-o,--output", f->output, "Merged .pth")->required();
  cmd->add_option("--dtype", f->dtype, "Stored type")->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
  return [f] {
    train::merge_lora_files(f->model, f->lora, f->output, f->dtype == "bf16" ? DType::BF16 : DType::F32);
    std::fprintf(stderr, "wrote %s\n", f->output.c_str());
    return 0;
  };
}

}  // namespace rwkv::cli
