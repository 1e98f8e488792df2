#include <vector>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/error.h"
#include "formats/npy.h"
#include "model/loader.h"
#include "runtime/state_file.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {
namespace {

struct LogitsOptions {
  std::string model;
  std::string tokens;
  std::string text;
  std::string tokenizer;
  bool all_positions = false;
  int64_t chunk = 0;  // 0: the whole sequence in one call
  std::string state_in;
  std::string state_out;
  std::string output;
};

int run_logits(const LogitsOptions& o) {
  std::vector<int32_t> tokens;
  if (!o.tokens.empty()) {
    tokens = parse_ids(o.tokens, "--tokens");
  }
  const auto model = load_model(o.model);
  if (o.tokens.empty()) tokens = make_tokenizer(o.tokenizer, model->config().n_vocab, o.model)->encode(o.text);
  if (tokens.empty()) fail("no tokens given (--tokens or --text must not be empty)");

  const int64_t n_vocab = model->config().n_vocab;
  State state = model->new_state();
  if (!o.state_in.empty())
    state = load_state_file(o.state_in, model->state_shape(), model->state_size()).state;

  const int64_t T = int64_t(tokens.size());
  const int64_t chunk = o.chunk == 0 ? T : o.chunk;
  std::vector<float> logits(size_t(o.all_positions ? T * n_vocab : n_vocab));
  auto workspace = model->new_workspace();
  for (int64_t start = 0; start < T; start += chunk) {
    const int64_t n = std::min(chunk, T - start);
    const std::span<const int32_t> piece(tokens.data() + start, size_t(n));
    if (o.all_positions) {
      model->forward(piece, state, Logits::All, std::span<float>(logits).subspan(size_t(start * n_vocab)),
                     workspace.get());
    } else {
      model->forward(piece, state, start + n == T ? Logits::Last : Logits::None, logits, workspace.get());
    }
  }

  if (o.all_positions) {
    write_npy_f32(o.output, {T, n_vocab}, logits.data());
  } else {
    write_npy_f32(o.output, {n_vocab}, logits.data());
  }
  if (!o.state_out.empty()) save_state_file(o.state_out, StateFile{state, {}});
  return 0;
}

}  // namespace

Runner add_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Feed tokens through a model and write the logits as a .npy file");
  auto o = std::make_shared<LogitsOptions>();
  cmd->add_option("-m,--model", o->model, "Model file")->required();
  auto* tokens = cmd->add_option("--tokens", o->tokens, "Comma-separated token ids, e.g. 1,2,3");
  auto* text = cmd->add_option("--text", o->text, "Text, tokenized with the model's tokenizer (see --tokenizer)");
  add_tokenizer_flag(*cmd, o->tokenizer);
  add_threads_flag(*cmd);
  tokens->excludes(text);
  cmd->add_flag("--all-positions", o->all_positions, "Write [n_tokens, n_vocab] logits instead of the last position's");
  cmd->add_option("--chunk", o->chunk, "Tokens per forward call (1 = RNN mode; default: all at once)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--state-in", o->state_in, "Start from this state file");
  cmd->add_option("--state-out", o->state_out, "Save the final state to this file");
  cmd->add_option("-o,--output", o->output, "Output .npy file")->required();
  return [o, tokens, text] {
    if (tokens->count() == 0 && text->count() == 0) fail("one of --tokens or --text is required");
    return run_logits(*o);
  };
}

}  // namespace rwkv::cli
