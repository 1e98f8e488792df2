// `rwkv chat`: a conversation on standard input and output. Each input line
// is one user turn (so scripts can pipe lines in); lines starting with '/' are
// commands. The screen shows the conversation in the RWKV chat format; the
// commands' messages and errors go to standard error, so a piped run's
// standard output is the conversation alone.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/error.h"
#include "model/loader.h"
#include "runtime/chat.h"
#include "runtime/prompt_cache.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {
namespace {

struct ChatCliOptions {
  std::string model;
  std::string tokenizer;
  std::string system;
  bool think = false;
  bool fake_think = false;
  int64_t max_tokens = 4096;
  SamplingFlags sampling;
  std::string state_in;
  bool verbose = false;
};

constexpr const char* kHelp =
    "Each line you type is one message. Commands:\n"
    "  /reset        start the conversation over (the system prompt stays)\n"
    "  /save FILE    save the conversation (state, transcript) to a state file\n"
    "  /load FILE    continue a saved conversation, or start from a state file\n"
    "  /regen        replace the last reply with a new one\n"
    "  /quit         leave (as does end of input)\n"
    "  /help         this list\n"
    "A message that starts with '/' is written with two: //etc. says /etc.\n";

void write_out(std::string_view s) {
  if (s.empty()) return;
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void note(const std::string& message) { std::fprintf(stderr, "%s\n", message.c_str()); }

class ChatCli {
 public:
  ChatCli(ChatSession& chat, bool verbose) : chat_(chat), verbose_(verbose) {}

  // Streams one reply (after the "Assistant:" prefix the model continues).
  template <typename Generate>
  void reply(Generate&& generate) {
    write_out(assistant_prefix(chat_.options().think));
    const auto t0 = std::chrono::steady_clock::now();
    generate([](std::string_view text) { write_out(text); });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_out("\n\n");
    if (verbose_) {
      const auto& s = chat_.last_reply();
      std::fprintf(stderr, "[%lld prompt tokens fed, %lld generated in %.2f s (seed %llu)]\n",
                   static_cast<long long>(s.prompt_tokens), static_cast<long long>(s.reply_tokens), seconds,
                   static_cast<unsigned long long>(chat_.last_reply_seed()));
    }
  }

  // Runs a /command; returns false for /quit.
  bool command(const std::string& line) {
    const size_t space = line.find(' ');
    const std::string name = line.substr(0, space);
    std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
    while (!arg.empty() && (arg.front() == ' ' || arg.front() == '\t')) arg.erase(arg.begin());
    while (!arg.empty() && (arg.back() == ' ' || arg.back() == '\t')) arg.pop_back();
    if (name == "/quit" || name == "/exit") return false;
    if (name == "/help") {
      std::fputs(kHelp, stderr);
    } else if (name == "/reset") {
      chat_.reset();
      note("(conversation reset)");
    } else if (name == "/save" || name == "/load") {
      if (arg.empty()) {
        note("usage: " + name + " FILE");
      } else if (name == "/save") {
        chat_.save(arg);
        note("(saved to " + arg + ")");
      } else {
        chat_.load(arg);
        note("(loaded " + arg + ")");
      }
    } else if (name == "/regen") {
      if (!chat_.can_regenerate()) {
        note("nothing to regenerate yet");
      } else {
        reply([&](const TextSink& sink) { chat_.regenerate(std::nullopt, sink); });
      }
    } else {
      note("unknown command " + name + ": /help lists the commands");
    }
    return true;
  }

  void message(const std::string& text) {
    reply([&](const TextSink& sink) { chat_.say(text, sink); });
  }

 private:
  ChatSession& chat_;
  bool verbose_;
};

int run_chat(ChatCliOptions& o) {
  if (o.max_tokens <= 0) fail("-n must be a positive number of tokens (got {})", o.max_tokens);
  require_utf8(o.system, "--system");
  const auto model = load_model(o.model);
  const auto tokenizer = make_tokenizer(o.tokenizer, model->config().n_vocab, o.model);
  ChatOptions options;
  options.system = o.system;
  options.think = o.think ? ThinkMode::Think : o.fake_think ? ThinkMode::FakeThink : ThinkMode::Off;
  options.sampling = o.sampling.params(*tokenizer);
  options.max_reply_tokens = o.max_tokens;
  options.stop_strings = o.sampling.stop_strings;
  if (!o.sampling.stop_tokens_default) options.end_tokens = o.sampling.stop_tokens;
  // Remembers the state after the system prompt, so /reset does not read it again.
  PromptCache cache(size_t(256) << 20);
  ChatSession chat(*model, *tokenizer, options, &cache);
  if (!o.state_in.empty()) chat.load(o.state_in);

  const bool interactive = ::isatty(STDIN_FILENO) == 1;
  if (interactive) note("Chatting with " + o.model + ". /help lists the commands, /quit leaves.");
  ChatCli cli(chat, o.verbose);
  std::string line;
  while (true) {
    if (interactive) write_out("User: ");
    if (!std::getline(std::cin, line)) {
      if (interactive) write_out("\n");
      break;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const bool is_command = line.starts_with('/') && !line.starts_with("//");
    if (!is_command && clean_chat_text(line).empty()) {
      if (interactive) note("(say something, or /help)");
      continue;
    }
    try {
      if (is_command) {
        if (!cli.command(line)) break;
        continue;
      }
      const std::string text = line.starts_with("//") ? line.substr(1) : line;
      require_utf8(text, "the message");  // before it is shown
      // A typed line is on the screen already; a piped one is shown here.
      if (!interactive) write_out("User: " + text + "\n");
      write_out("\n");
      cli.message(text);
    } catch (const Error& e) {
      note(std::string("error: ") + e.what());
    }
  }
  return 0;
}

}  // namespace

Runner add_chat(CLI::App& app) {
  auto* cmd = app.add_subcommand("chat", "Chat with a model on the terminal (or lines piped to standard input)");
  auto o = std::make_shared<ChatCliOptions>();
  // The official chat demo's sampling (ChatRWKV API_DEMO_CHAT.py).
  o->sampling.base = chat_default_sampling();
  add_model_flag_with_default(*cmd, o->model);
  cmd->add_option("--system", o->system, "System prompt, the conversation's first turn");
  auto* think = cmd->add_flag("--think", o->think, "G1 thinking mode: replies open with '<think'");
  auto* fake = cmd->add_flag("--fake-think", o->fake_think,
                             "G1 fast mode: replies open with an empty '<think>\\n</think' (per the G1 templates)");
  think->excludes(fake);
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Most tokens in one reply")
      ->capture_default_str();
  add_tokenizer_flag(*cmd, o->tokenizer);
  o->sampling.add_flags(*cmd);
  cmd->add_option("--state-in", o->state_in, "Start from this state file (a saved conversation or any state)");
  cmd->add_flag("-v,--verbose", o->verbose, "After each reply, print token counts and time to standard error");
  return [o] {
    if (o->model.empty()) o->model = default_model_path();
    return run_chat(*o);
  };
}

}  // namespace rwkv::cli
