// Flags and checks shared by several subcommands, declared once.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {

// The small model this project trains and ships (models/ in the source tree,
// or share/rwkv/ of an installation): what generate and chat run without -m.
// Fails naming both places when neither holds it.
std::string default_model_path();
// Adds -m/--model to `cmd`, defaulting to default_model_path() when omitted.
void add_model_flag_with_default(CLI::App& cmd, std::string& model);

// --temperature --top-p --top-k --min-p --presence-penalty --frequency-penalty
// --penalty-decay --repeat-penalty --seed --ban --logit-bias --stop --stop-token
struct SamplingFlags {
  SamplerParams base{.temperature = 1.0f,
                     .top_p = 0.85f,
                     .presence_penalty = 0.2f,
                     .frequency_penalty = 0.2f,
                     .penalty_decay = 0.996f};
  int64_t seed = -1;  // -1: a random seed
  std::vector<std::string> ban;
  std::vector<std::string> logit_bias;
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_tokens;
  bool stop_tokens_default = true;  // false once --stop-token is given

  void add_flags(CLI::App& cmd);
  // The sampler parameters; ids are checked against the tokenizer's vocabulary.
  SamplerParams params(const Tokenizer& tokenizer);
};

void add_tokenizer_flag(CLI::App& cmd, std::string& spec);

// A progress bar on stderr: "label [#####.....]  42% detail", redrawn when
// the whole percentage changes (on a terminal also up to ten times a second
// for the detail). By default drawn only when stderr is a terminal, so pipes
// and logs stay clean; `always` draws it anyway (convert's bar, which
// scripts watch).
class ProgressBar {
 public:
  explicit ProgressBar(std::string label, bool always = false);
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(double done, double total, std::string_view detail = {});
  // Ends the bar (once; later calls do nothing): on a terminal its line is
  // cleared, elsewhere the last state stays, followed by a newline.
  void finish();

 private:
  std::string label_;
  bool tty_;
  bool draw_;
  bool drawn_ = false;
  int last_percent_ = -1;
  int64_t last_draw_ns_ = 0;
};

// --threads N: the kernels' thread count for this run (core/thread_pool.h),
// applied as soon as the flag is parsed; without it, every hardware thread.
void add_threads_flag(CLI::App& cmd);

// Fails naming `what` if `text` is not valid UTF-8.
void require_utf8(std::string_view text, const char* what);

// Parses "1,2,3" into ids; fails naming the flag on anything else.
std::vector<int32_t> parse_ids(const std::string& list, const char* flag);

// Turns \n, \t, \r, \\ and \xHH in a command-line string into the bytes they name.
std::string unescape(const std::string& text);

}  // namespace rwkv::cli
