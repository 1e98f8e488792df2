// rwkv init: a freshly initialised RWKV-7 checkpoint (official initialisation).
#include <cstdio>
#include <memory>

#include "apps/cli/commands.h"
#include "core/error.h"
#include "train/checkpoint.h"
#include "train/init.h"
#include "train/params.h"

namespace rwkv::cli {
namespace {

struct InitOptions {
  std::string output;
  int64_t n_layer = 0, n_embd = 0, vocab = 0, head_size = 64;
  uint64_t seed = 42;
  std::string dtype = "fp32";
};

int run_init(const InitOptions& o) {
  const train::TrainConfig cfg = train::TrainConfig::official(o.n_layer, o.n_embd, o.vocab, o.head_size);
  cfg.validate();
  const train::ParamLayout layout(cfg);
  std::vector<float> params(layout.size());
  train::init_official(layout, params, o.seed);
  train::save_pth(o.output, layout, params, o.dtype == "bf16" ? DType::BF16 : DType::F32);
  std::fprintf(stderr, "wrote %s: RWKV-7 %s, %zu parameters\n", o.output.c_str(), cfg.describe().c_str(),
               params.size());
  return 0;
}

}  // namespace

Runner add_init(CLI::App& app) {
  auto* cmd = app.add_subcommand("init", "Write a new RWKV-7 model with the official initialisation");
  auto o = std::make_shared<InitOptions>();
  cmd->add_option("-o,--output", o->output, "Output .pth file")->required();
  cmd->add_option("--n-layer", o->n_layer, "Layers")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--n-embd", o->n_embd, "Embedding size (a multiple of --head-size)")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--vocab", o->vocab, "Vocabulary size (65536 for World, 256 for bytes)")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--head-size", o->head_size, "Head size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "Stored type")->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
  return [o] { return run_init(*o); };
}

}  // namespace rwkv::cli
