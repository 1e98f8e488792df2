#include <fmt/format.h>

#include "apps/cli/commands.h"
#include "model/loader.h"

namespace rwkv::cli {

Runner add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a model's version, format and shape");
  auto model_path = std::make_shared<std::string>();
  cmd->add_option("-m,--model", *model_path, "Model file (.pth, rwkv.cpp .bin, GGUF, safetensors)")->required();
  return [model_path] {
    const auto model = load_model(*model_path);
    const ModelConfig& c = model->config();
    fmt::print("version: {}\n", arch_name(c.arch));
    fmt::print("variant: {}\n", c.variant);
    fmt::print("format: {}\n", c.file_format);
    fmt::print("dtype: {}\n", dtype_name(c.dtype));
    fmt::print("n_layer: {}\n", c.n_layer);
    fmt::print("n_embd: {}\n", c.n_embd);
    fmt::print("head_size: {}\n", c.head_size);
    fmt::print("n_head: {}\n", c.n_head);
    fmt::print("n_vocab: {}\n", c.n_vocab);
    fmt::print("dim_ffn: {}\n", c.dim_ffn);
    if (c.arch == Arch::V7)
      fmt::print("lora_ranks: decay {}, iclr {}, value {}, gate {}\n", c.lora_w, c.lora_a, c.lora_v, c.lora_g);
    if (c.arch == Arch::V6) fmt::print("lora_ranks: mix {}, decay {}\n", c.lora_mix, c.lora_w);
    fmt::print("parameters: {}\n", c.n_params);
    fmt::print("state_floats: {}\n", model->state_size());
    return 0;
  };
}

}  // namespace rwkv::cli
