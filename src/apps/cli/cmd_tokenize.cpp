// `rwkv tokenize` and `rwkv detokenize`: text <-> token ids through the
// tokenizer a model uses, byte-exactly (standard input is taken as bytes,
// nothing added or removed).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "apps/cli/commands.h"
#include "core/error.h"
#include "model/loader.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {
namespace {

struct TokenizerOptions {
  std::string vocab;
  std::string tokenizer;
  std::string model;
  bool ids_only = false;
};

// The flags that pick a tokenizer, shared by both commands.
void add_selection(CLI::App* cmd, TokenizerOptions& o) {
  auto* vocab = cmd->add_option("--vocab", o.vocab, "Vocabulary file in the RWKV World format");
  auto* tok = cmd->add_option("--tokenizer", o.tokenizer, "world, neox, bytes, or a vocabulary file (.txt World format, .json tokenizer.json)");
  vocab->excludes(tok);
  cmd->add_option("-m,--model", o.model,
                  "Model whose vocabulary size picks the tokenizer (and is checked against an explicit one)");
}

std::unique_ptr<Tokenizer> select_tokenizer(const TokenizerOptions& o) {
  const std::string spec = o.vocab.empty() ? o.tokenizer : o.vocab;
  int64_t n_vocab = 0;  // no model: nothing to check against
  if (!o.model.empty()) n_vocab = load_model(o.model)->config().n_vocab;
  return make_tokenizer(spec, n_vocab, o.model);
}

std::string read_stdin() {
  std::string data;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0) data.append(buffer, n);
  if (std::ferror(stdin)) fail("cannot read standard input: {}", std::strerror(errno));
  return data;
}

void write_stdout(const std::string& data) {
  if (std::fwrite(data.data(), 1, data.size(), stdout) != data.size() || std::fflush(stdout) != 0)
    fail("cannot write standard output: {}", std::strerror(errno));
}

// A token's bytes made readable on one line: valid UTF-8 characters as they
// are, common control characters as C escapes, any other byte as \xHH.
std::string token_repr(std::string_view bytes) {
  std::string out = "\"";
  size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    const int n = utf8_char_length(bytes, i);
    if (n > 1) {
      out.append(bytes.substr(i, size_t(n)));
      i += size_t(n);
      continue;
    }
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c >= 0x20 && c < 0x7F) out += char(c);
    else out += fmt::format("\\x{:02x}", c);
    ++i;
  }
  return out + "\"";
}

int run_tokenize(const TokenizerOptions& o) {
  const auto tokenizer = select_tokenizer(o);
  const std::vector<int32_t> ids = tokenizer->encode(read_stdin());
  std::string out;
  if (o.ids_only) {
    for (size_t i = 0; i < ids.size(); ++i) out += fmt::format("{}{}", i == 0 ? "" : " ", ids[i]);
    out += '\n';
  } else {
    for (int32_t id : ids) out += fmt::format("{}\t{}\n", id, token_repr(tokenizer->token_bytes(id)));
  }
  write_stdout(out);
  return 0;
}

// Ids separated by whitespace and/or commas.
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  auto is_separator = [](char c) { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  size_t i = 0;
  while (i < text.size()) {
    if (is_separator(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !is_separator(text[end])) ++end;
    const std::string item = text.substr(i, end - i);
    int64_t value = 0;
    for (char c : item) {
      if (c < '0' || c > '9') fail("'{}' is not a token id (expected non-negative integers)", item);
      value = value * 10 + (c - '0');
      if (value > INT32_MAX) fail("token id {} is out of range", item);
    }
    ids.push_back(int32_t(value));
    i = end;
  }
  return ids;
}

int run_detokenize(const TokenizerOptions& o) {
  const std::vector<int32_t> ids = parse_ids(read_stdin());
  const auto tokenizer = select_tokenizer(o);
  // Decode everything before writing anything, so a bad id leaves no output.
  write_stdout(tokenizer->decode(ids));
  return 0;
}

}  // namespace

Runner add_tokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Read text from standard input and print its token ids");
  auto o = std::make_shared<TokenizerOptions>();
  add_selection(cmd, *o);
  cmd->add_flag("--ids-only", o->ids_only, "Print only the ids, space-separated, on one line");
  return [o] { return run_tokenize(*o); };
}

Runner add_detokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand("detokenize", "Read token ids from standard input and write their bytes");
  auto o = std::make_shared<TokenizerOptions>();
  add_selection(cmd, *o);
  return [o] { return run_detokenize(*o); };
}

}  // namespace rwkv::cli
