// `rwkv ask`: one question about a document, answered in the chat format with
// the question before the document and again after it (see ask_message).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/loader.h"
#include "runtime/chat.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {
namespace {

struct AskOptions {
  std::string model;
  std::string tokenizer;
  std::string document;
  std::string question;
  bool think = false;
  int64_t max_tokens = 4096;
  SamplingFlags sampling;
};

void write_out(std::string_view s) {
  if (s.empty()) return;
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

int run_ask(AskOptions& o) {
  if (o.max_tokens <= 0) fail("-n must be a positive number of tokens (got {})", o.max_tokens);
  require_utf8(o.question, "the question");
  if (clean_chat_text(o.question).empty()) fail("the question is empty: give --question TEXT");
  std::shared_ptr<const MappedFile> file;
  try {
    file = MappedFile::open(o.document);
  } catch (const Error& e) {
    fail("cannot read the document: {}", e.what());
  }
  const std::string document(reinterpret_cast<const char*>(file->data()), file->size());
  require_utf8(document, ("the document " + o.document).c_str());
  if (clean_chat_text(document).empty()) fail("the document {} is empty", o.document);

  const auto model = load_model(o.model);
  const auto tokenizer = make_tokenizer(o.tokenizer, model->config().n_vocab, o.model);
  ChatOptions options;
  options.think = o.think ? ThinkMode::Think : ThinkMode::Off;
  options.sampling = o.sampling.params(*tokenizer);
  options.max_reply_tokens = o.max_tokens;
  options.stop_strings = o.sampling.stop_strings;
  if (!o.sampling.stop_tokens_default) options.end_tokens = o.sampling.stop_tokens;
  ChatSession chat(*model, *tokenizer, options);

  // The answer without the space that follows "Assistant:"; in thinking mode
  // with the "<think" the model continues from.
  bool started = o.think;
  if (o.think) write_out("<think");
  const auto t0 = std::chrono::steady_clock::now();
  chat.say(ask_message(o.question, document), [&](std::string_view text) {
    if (!started) {
      while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
      started = !text.empty();
    }
    write_out(text);
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_out("\n");
  const auto& s = chat.last_reply();
  std::fprintf(stderr, "document and question: %lld tokens; answer: %lld tokens; %.2f s\n",
               static_cast<long long>(s.prompt_tokens), static_cast<long long>(s.reply_tokens), seconds);
  return 0;
}

}  // namespace

Runner add_ask(CLI::App& app) {
  auto* cmd = app.add_subcommand("ask", "Answer a question about a document, streaming the answer to standard output");
  auto o = std::make_shared<AskOptions>();
  // The official chat demo's sampling (ChatRWKV API_DEMO_CHAT.py).
  o->sampling.base = chat_default_sampling();
  cmd->add_option("-m,--model", o->model, "Model file")->required();
  cmd->add_option("--document", o->document, "Text file the question is about")->required();
  cmd->add_option("-q,--question", o->question, "The question")->required();
  cmd->add_flag("--think", o->think, "G1 thinking mode: the answer opens with '<think'");
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Most tokens in the answer")
      ->capture_default_str();
  add_tokenizer_flag(*cmd, o->tokenizer);
  o->sampling.add_flags(*cmd);
  return [o] { return run_ask(*o); };
}

}  // namespace rwkv::cli
