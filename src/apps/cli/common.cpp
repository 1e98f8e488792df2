#include "apps/cli/common.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "core/error.h"
#include "core/thread_pool.h"

namespace rwkv::cli {

std::string default_model_path() {
  for (const char* path : {RWKV_DEFAULT_MODEL, RWKV_INSTALLED_MODEL}) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) return path;
  }
  fail("no -m MODEL given, and the default model is neither at {} nor at {}", RWKV_DEFAULT_MODEL,
       RWKV_INSTALLED_MODEL);
}

void add_model_flag_with_default(CLI::App& cmd, std::string& model) {
  cmd.add_option("-m,--model", model, fmt::format("Model file (default: the project's own {})",
                                                  std::filesystem::path(RWKV_DEFAULT_MODEL).filename().string()));
}

std::vector<int32_t> parse_ids(const std::string& list, const char* flag) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    std::string item = list.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    int64_t value = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size())
      fail("{}: '{}' is not a token id (expected comma-separated integers)", flag, item);
    if (value < 0 || value > INT32_MAX) fail("{}: token id {} is out of range", flag, value);
    ids.push_back(int32_t(value));
    pos = comma + 1;
  }
  return ids;
}

std::string unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char c = text[++i];
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case 'x': {
        unsigned value = 0;
        const auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + std::min(text.size(), i + 3), value, 16);
        if (ec != std::errc() || end != text.data() + i + 3) fail("bad escape in '{}': \\x needs two hex digits", text);
        out += char(value);
        i += 2;
        break;
      }
      default: out += '\\'; out += c;
    }
  }
  return out;
}

void require_utf8(std::string_view text, const char* what) {
  for (size_t i = 0; i < text.size();) {
    const int n = utf8_char_length(text, i);
    if (n <= 0) fail("{} is not valid UTF-8 (bad byte 0x{:02x} at offset {})", what, uint8_t(text[i]), i);
    i += size_t(n);
  }
}

void add_tokenizer_flag(CLI::App& cmd, std::string& spec) {
  cmd.add_option("--tokenizer", spec, "world, bytes, or a vocabulary file (default: chosen from the model)");
}

ProgressBar::ProgressBar(std::string label, bool always)
    : label_(std::move(label)), tty_(::isatty(2) != 0), draw_(tty_ || always) {}

void ProgressBar::update(double done, double total, std::string_view detail) {
  if (!draw_) return;
  const double fraction = total > 0 ? std::clamp(done / total, 0.0, 1.0) : 1.0;
  const int percent = int(fraction * 100);
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  // The same percentage again: redrawn (for its detail) only on a terminal.
  if (percent == last_percent_ && (!tty_ || now - last_draw_ns_ < 100'000'000)) return;
  last_percent_ = percent;
  last_draw_ns_ = now;
  const int width = 30, filled = int(fraction * width);
  const std::string line = fmt::format("{} [{}{}] {:3}% {}", label_, std::string(size_t(filled), '#'),
                                       std::string(size_t(width - filled), '.'), percent, detail);
  fmt::print(stderr, "\r{:<79.79}", line);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) {
    if (tty_) {
      fmt::print(stderr, "\r{:79}\r", "");
    } else {
      fmt::print(stderr, "\n");
    }
    std::fflush(stderr);
  }
  drawn_ = false;
}

void add_threads_flag(CLI::App& cmd) {
  cmd.add_option_function<int>("--threads", [](int n) { set_num_threads(n); },
                               "Threads for the matrix kernels (default: all hardware threads)")
      ->check(CLI::Range(1, 1024));
}

void SamplingFlags::add_flags(CLI::App& cmd) {
  cmd.add_option("--temperature", base.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd.add_option("--top-p", base.top_p, "Nucleus sampling: keep the most likely tokens up to this probability")
      ->capture_default_str();
  cmd.add_option("--top-k", base.top_k, "Keep only the k most likely tokens (0 = off)")->capture_default_str();
  cmd.add_option("--min-p", base.min_p, "Drop tokens below this fraction of the top token's probability")
      ->capture_default_str();
  cmd.add_option("--presence-penalty", base.presence_penalty, "Subtracted from a token's logit once it occurred")
      ->capture_default_str();
  cmd.add_option("--frequency-penalty", base.frequency_penalty, "Subtracted per (decayed) occurrence")
      ->capture_default_str();
  cmd.add_option("--penalty-decay", base.penalty_decay, "Occurrence counts decay by this factor per token")
      ->capture_default_str();
  cmd.add_option("--repeat-penalty", base.repeat_penalty, "Divide positive logits of occurred tokens by this")
      ->capture_default_str();
  cmd.add_option("--seed", seed, "Random seed (default: random)");
  cmd.add_option("--ban", ban, "Token ids never to generate (comma-separated, repeatable)");
  cmd.add_option("--logit-bias", logit_bias, "ID=BIAS added to a token's logit (repeatable)");
  cmd.add_option("--stop", stop_strings, "Stop when this text is generated (repeatable; \\n escapes allowed)");
  cmd.add_option_function<std::string>(
      "--stop-token",
      [this](const std::string& ids) {
        stop_tokens_default = false;
        for (int32_t id : parse_ids(ids, "--stop-token")) stop_tokens.push_back(id);
      },
      "Stop when one of these token ids is sampled (default: end of text for World models)");
}

SamplerParams SamplingFlags::params(const Tokenizer& tokenizer) {
  SamplerParams p = base;
  p.seed = seed >= 0 ? uint64_t(seed) : std::random_device{}();
  for (const auto& list : ban)
    for (int32_t id : parse_ids(list, "--ban")) p.ban.push_back(id);
  for (const auto& item : logit_bias) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) fail("--logit-bias: '{}' is not ID=BIAS", item);
    const auto ids = parse_ids(item.substr(0, eq), "--logit-bias");
    float bias = 0;
    const std::string value = item.substr(eq + 1);
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), bias);
    if (ids.size() != 1 || value.empty() || ec != std::errc() || end != value.data() + value.size())
      fail("--logit-bias: '{}' is not ID=BIAS", item);
    p.logit_bias[ids[0]] += bias;
  }
  for (auto& s : stop_strings) {
    s = unescape(s);
    if (s.empty()) fail("--stop: a stop string must not be empty");
  }
  for (int32_t id : stop_tokens)
    if (id >= tokenizer.vocab_size()) fail("--stop-token: token id {} is outside the vocabulary", id);
  return p;
}

}  // namespace rwkv::cli
