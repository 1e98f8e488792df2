#include <chrono>
#include <cstdio>
#include <random>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/error.h"
#include "model/loader.h"
#include "runtime/session.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  bool prompt_given = false;
  int64_t n_tokens = 100;
  std::string tokenizer;
  SamplingFlags sampling;
  std::string state_in;
  std::string state_out;
  bool echo = false;
  int64_t chunk = 0;
};

// Writes generated text as it comes, minus any stop string: text that might
// be the start of a stop string is held back until it is clearly not.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Appends text; returns what can be printed now. Sets stopped() when a stop string appears.
  std::string push(const std::string& text) {
    pending_ += text;
    for (const auto& stop : stops_) {
      const size_t at = pending_.find(stop);
      if (at != std::string::npos) {
        stopped_ = true;
        std::string out = pending_.substr(0, at);
        pending_.clear();
        return out;
      }
    }
    size_t hold = 0;  // longest suffix of pending_ that is a proper prefix of a stop string
    for (const auto& stop : stops_)
      for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n)
        if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
          hold = n;
          break;
        }
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return out;
  }
  std::string flush() { return std::exchange(pending_, {}); }
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

void write_out(const std::string& s) {
  if (s.empty()) return;
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

// The official pipeline does not count whitespace and digit tokens towards
// the repetition penalties (their text is a substring of " \t0123456789").
float occurrence_weight(std::string_view token_text) {
  return std::string_view(" \t0123456789").find(token_text) != std::string_view::npos ? 0.0f : 1.0f;
}

int run_generate(GenerateOptions& o) {
  if (o.n_tokens <= 0) fail("-n must be a positive number of tokens (got {})", o.n_tokens);
  require_utf8(o.prompt, "the prompt");
  if (o.prompt.empty() && o.state_in.empty())
    fail("the prompt is empty: give -p TEXT, or --state-in FILE to continue a saved generation");

  const auto model = load_model(o.model);
  const auto tokenizer = make_tokenizer(o.tokenizer, model->config().n_vocab, o.model);
  SamplerParams params = o.sampling.params(*tokenizer);
  // Logits past the tokenizer's last id (World: 65530..65535) have no text.
  for (int64_t id = tokenizer->vocab_size(); id < model->config().n_vocab; ++id) params.ban.push_back(int32_t(id));
  std::vector<int32_t> stop_tokens = o.sampling.stop_tokens;
  if (tokenizer->name() == "world" && o.sampling.stop_tokens_default) stop_tokens.push_back(0);  // end of text
  Session session(*model, params);
  if (!o.state_in.empty()) session.restore(load_state_file(o.state_in, model->state_shape(), model->state_size()));

  const auto prompt_tokens = tokenizer->encode(o.prompt);
  const auto t0 = std::chrono::steady_clock::now();
  session.feed(prompt_tokens, o.chunk);
  const auto t1 = std::chrono::steady_clock::now();
  if (!session.has_logits()) fail("the state file holds no logits to continue from: give a prompt");
  if (o.echo) write_out(o.prompt);

  Utf8StreamDecoder utf8;
  StopStringFilter stops(o.sampling.stop_strings);
  int64_t generated = 0;
  for (; generated < o.n_tokens && !stops.stopped(); ++generated) {
    const int32_t token = session.sample();
    if (std::find(stop_tokens.begin(), stop_tokens.end(), token) != stop_tokens.end()) break;
    const std::string_view bytes = tokenizer->token_bytes(token);
    session.sampler().accept(token, occurrence_weight(bytes));
    const int32_t one[1] = {token};
    session.feed(one);
    write_out(stops.push(utf8.feed(bytes)));
  }
  if (!stops.stopped()) write_out(stops.push(utf8.flush()) + stops.flush());
  const auto t2 = std::chrono::steady_clock::now();

  if (!o.state_out.empty()) save_state_file(o.state_out, session.snapshot());
  const double prompt_s = std::chrono::duration<double>(t1 - t0).count();
  const double gen_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr, "\nprompt: %zu tokens, %.1f tokens/s; generation: %lld tokens, %.1f tokens/s\n",
               prompt_tokens.size(), prompt_s > 0 ? double(prompt_tokens.size()) / prompt_s : 0.0,
               static_cast<long long>(generated), gen_s > 0 ? double(generated) / gen_s : 0.0);
  return 0;
}

}  // namespace

Runner add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Continue a prompt, streaming the generated text to standard output");
  auto o = std::make_shared<GenerateOptions>();
  add_model_flag_with_default(*cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text (may be empty with --state-in)");
  cmd->add_option("-n,--n-tokens", o->n_tokens, "Tokens to generate")->capture_default_str();
  add_tokenizer_flag(*cmd, o->tokenizer);
  add_threads_flag(*cmd);
  o->sampling.add_flags(*cmd);
  cmd->add_option("--state-in", o->state_in, "Continue from this state file (state, logits, penalties)");
  cmd->add_option("--state-out", o->state_out, "Save the session here after the last emitted token");
  cmd->add_flag("--echo", o->echo, "Print the prompt before the generated text");
  cmd->add_option("--chunk", o->chunk, "Prompt tokens per forward call (default: all at once)")
      ->check(CLI::PositiveNumber);
  return [o] {
    if (o->model.empty()) o->model = default_model_path();
    return run_generate(*o);
  };
}

}  // namespace rwkv::cli
