// Subcommands of the `rwkv` command-line program.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace rwkv::cli {

// Each registers its subcommand on `app`; the returned function runs it once
// the command line is parsed and returns the process exit code.
using Runner = std::function<int()>;

Runner add_info(CLI::App& app);
Runner add_logits(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_detokenize(CLI::App& app);
Runner add_generate(CLI::App& app);
Runner add_chat(CLI::App& app);
Runner add_ask(CLI::App& app);
Runner add_init(CLI::App& app);
Runner add_train(CLI::App& app);
Runner add_lora_merge(CLI::App& app);
Runner add_convert(CLI::App& app);
Runner add_quantize(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_perplexity(CLI::App& app);
Runner add_eval(CLI::App& app);

}  // namespace rwkv::cli
