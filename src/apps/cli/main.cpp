// rwkv: the command-line front end of the engine.
#include <cstdio>
#include <exception>
#include <map>

#include "apps/cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"rwkv: run RWKV language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "rwkv 0.1.0");

  std::map<CLI::App*, rwkv::cli::Runner> runners;
  auto add = [&](rwkv::cli::Runner (*adder)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    rwkv::cli::Runner run = adder(app);
    runners[app.get_subcommands({})[before]] = std::move(run);
  };
  add(rwkv::cli::add_info);
  add(rwkv::cli::add_logits);
  add(rwkv::cli::add_tokenize);
  add(rwkv::cli::add_detokenize);
  add(rwkv::cli::add_generate);
  add(rwkv::cli::add_chat);
  add(rwkv::cli::add_ask);
  add(rwkv::cli::add_init);
  add(rwkv::cli::add_train);
  add(rwkv::cli::add_lora_merge);
  add(rwkv::cli::add_convert);
  add(rwkv::cli::add_quantize);
  add(rwkv::cli::add_bench);
  add(rwkv::cli::add_perplexity);
  add(rwkv::cli::add_eval);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const rwkv::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 1;
}
