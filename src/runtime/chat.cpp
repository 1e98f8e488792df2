#include "runtime/chat.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "runtime/state_file.h"

namespace rwkv {
namespace {

using Json = nlohmann::json;

constexpr const char* kChatSection = "chat";  // JSON: seeds, regeneration point
constexpr const char* kTranscriptSection = "chat.transcript";
constexpr const char* kRegenStateSection = "chat.regen.state";
constexpr const char* kRegenLogitsSection = "chat.regen.logits";
constexpr int kChatFormat = 1;

// The characters Python's str.isspace() accepts, which str.strip() removes.
bool is_python_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// The code point of the valid character of `n` bytes at `s[pos]`.
uint32_t code_point(std::string_view s, size_t pos, int n) {
  const auto b = [&](size_t i) { return uint32_t(uint8_t(s[pos + i])); };
  switch (n) {
    case 1: return b(0);
    case 2: return (b(0) & 0x1f) << 6 | (b(1) & 0x3f);
    case 3: return (b(0) & 0x0f) << 12 | (b(1) & 0x3f) << 6 | (b(2) & 0x3f);
    default: return (b(0) & 0x07) << 18 | (b(1) & 0x3f) << 12 | (b(2) & 0x3f) << 6 | (b(3) & 0x3f);
  }
}

// Strips leading and trailing whitespace characters; stops at invalid UTF-8.
std::string_view strip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    const int n = utf8_char_length(s, begin);
    if (n <= 0 || !is_python_space(code_point(s, begin, n))) break;
    begin += size_t(n);
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;  // back to the lead byte of the last character
    while (start > begin && end - start < 4 && (uint8_t(s[start]) & 0xc0) == 0x80) --start;
    const int n = utf8_char_length(s, start);
    if (n <= 0 || start + size_t(n) != end || !is_python_space(code_point(s, start, n))) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

void require_utf8(std::string_view text, const char* what) {
  for (size_t i = 0; i < text.size();) {
    const int n = utf8_char_length(text, i);
    if (n <= 0) fail("{} is not valid UTF-8 (bad byte 0x{:02x} at offset {})", what, uint8_t(text[i]), i);
    i += size_t(n);
  }
}

bool ends_with_turn_end(std::string_view s) { return s.ends_with(kTurnEnd); }

// Passes generated text on as it comes, minus the stop strings: text that may
// be the start of one is held back until it is clearly not.
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stops) : stops_(stops) {}

  std::string push(std::string_view text) {
    pending_ += text;
    for (size_t i = 0; i < stops_.size(); ++i)
      if (const size_t at = pending_.find(stops_[i]); at != std::string::npos) {
        matched_ = int(i);
        return take(at);
      }
    size_t hold = 0;  // longest suffix that is a proper prefix of a stop string
    for (const auto& stop : stops_)
      for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n)
        if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
          hold = n;
          break;
        }
    return take(pending_.size() - hold);
  }
  std::string flush() { return take(pending_.size()); }
  // Index of the stop string seen, or -1.
  int matched() const { return matched_; }
  const std::string& passed() const { return passed_; }

 private:
  std::string take(size_t n) {
    std::string out = pending_.substr(0, n);
    pending_.erase(0, matched_ >= 0 ? pending_.size() : n);
    passed_ += out;
    return out;
  }

  const std::vector<std::string>& stops_;
  std::string pending_;
  std::string passed_;
  int matched_ = -1;
};

// splitmix64: well-spread seeds from consecutive numbers.
uint64_t mix_seed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::vector<std::byte> to_bytes(std::span<const float> v) {
  std::vector<std::byte> out(v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<std::byte> to_bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

std::vector<float> floats_of(const std::vector<std::byte>& bytes, size_t expected, const std::string& path,
                             const char* what) {
  if (bytes.size() != expected * sizeof(float)) fail("{}: damaged chat save ({} has the wrong size)", path, what);
  std::vector<float> out(expected);
  if (expected > 0) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

}  // namespace

std::string clean_chat_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;  // \r\n -> \n
    if (text[i] == '\n' && !out.empty() && out.back() == '\n') continue;          // \n\n+ -> \n
    out += text[i];
  }
  return std::string(strip(out));
}

std::string system_turn(std::string_view text) { return "System: " + clean_chat_text(text) + std::string(kTurnEnd); }
std::string user_turn(std::string_view text) { return "User: " + clean_chat_text(text) + std::string(kTurnEnd); }

std::string_view assistant_prefix(ThinkMode mode) {
  switch (mode) {
    case ThinkMode::Think: return "Assistant: <think";
    case ThinkMode::FakeThink: return "Assistant: <think>\n</think";
    case ThinkMode::Off: break;
  }
  return "Assistant:";
}

std::string ask_message(std::string_view question, std::string_view document) {
  const std::string q = clean_chat_text(question);
  const std::string doc = clean_chat_text(document);
  if (q.empty()) fail("the question is empty");
  if (doc.empty()) fail("the document is empty");
  return q + "\n" + doc + "\n" + q;
}

SamplerParams chat_default_sampling() {
  return SamplerParams{.temperature = 1.0f,
                       .top_p = 0.3f,
                       .presence_penalty = 0.5f,
                       .frequency_penalty = 0.5f,
                       .penalty_decay = 0.996f};
}

std::vector<int32_t> default_end_tokens(const Tokenizer& tokenizer) {
  if (tokenizer.name() == "world") return {0};
  if (tokenizer.vocab_size() > 0 && tokenizer.token_bytes(0) == "<|endoftext|>") return {0};
  return {};
}

ChatSession::ChatSession(const Model& model, const Tokenizer& tokenizer, ChatOptions options, PromptCache* cache)
    : model_(model),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      cache_(cache),
      session_(model, options_.sampling) {
  if (tokenizer_.vocab_size() > model_.config().n_vocab)
    fail("the tokenizer has {} ids but the model only {}", tokenizer_.vocab_size(), model_.config().n_vocab);
  if (options_.max_reply_tokens <= 0) fail("the reply limit must be a positive number of tokens");
  require_utf8(options_.system, "the system prompt");
  // Logits past the tokenizer's last id (World: 65530..65535) have no text.
  for (int64_t id = tokenizer_.vocab_size(); id < model_.config().n_vocab; ++id)
    options_.sampling.ban.push_back(int32_t(id));
  validate(options_.sampling, model_.config().n_vocab);
  end_tokens_ = options_.end_tokens ? *options_.end_tokens : default_end_tokens(tokenizer_);
  for (int32_t id : end_tokens_)
    if (id < 0 || id >= model_.config().n_vocab) fail("end-of-text token {} is outside the vocabulary", id);
  stops_.emplace_back(kTurnEnd);
  for (const auto& s : options_.stop_strings) {
    if (s.empty()) fail("a stop string must not be empty");
    stops_.push_back(s);
  }
  reset();
}

void ChatSession::feed_text(const std::string& text) {
  const auto tokens = tokenizer_.encode(text);
  session_.feed(tokens, options_.chunk);
  transcript_ += text;
  last_.prompt_tokens += int64_t(tokens.size());
}

// The n-th reply's seed; mixing the base first keeps the streams of nearby
// base seeds apart (base 1's second reply must not be base 2's first).
uint64_t ChatSession::next_seed() { return mix_seed(mix_seed(options_.sampling.seed) + replies_++); }

void ChatSession::reset() {
  before_reply_.reset();
  transcript_.clear();
  last_ = {};
  if (initial_) {
    session_.set_state(initial_->state, initial_->logits);
  } else {
    session_.reset();
  }
  if (clean_chat_text(options_.system).empty()) return;
  const std::string text = system_turn(options_.system);
  if (cache_ != nullptr && !initial_) {
    // The cache holds states read from the fresh state, which this is.
    last_.prompt_tokens = int64_t(feed_cached(session_, *cache_, tokenizer_.encode(text), options_.chunk));
    transcript_ += text;
  } else {
    feed_text(text);
  }
}

std::string ChatSession::say(std::string_view message, const TextSink& sink) {
  require_utf8(message, "the message");
  const std::string cleaned = clean_chat_text(message);
  if (cleaned.empty()) fail("the message is empty: say something");
  // A reply cut short (by the limit, end-of-text or a stop string) did not
  // end its turn with a blank line; the format needs one before the next.
  std::string text = transcript_.empty() || ends_with_turn_end(transcript_) ? "" : std::string(kTurnEnd);
  text += user_turn(cleaned);
  text += assistant_prefix(options_.think);
  last_ = {};
  feed_text(text);
  const auto logits = session_.logits();
  before_reply_ = Checkpoint{session_.state(), {logits.begin(), logits.end()}, transcript_.size()};
  return generate_reply(next_seed(), sink);
}

std::string ChatSession::regenerate(std::optional<uint64_t> seed, const TextSink& sink) {
  if (!before_reply_) fail("there is no reply to regenerate");
  session_.set_state(before_reply_->state, before_reply_->logits);
  transcript_.resize(before_reply_->transcript_size);
  last_ = {};
  return generate_reply(seed ? *seed : next_seed(), sink);
}

std::string ChatSession::generate_reply(uint64_t seed, const TextSink& sink) {
  SamplerParams params = options_.sampling;
  params.seed = seed;
  session_.sampler() = Sampler(params, model_.config().n_vocab);  // fresh penalty counts per reply
  last_seed_ = seed;

  const auto emit = [&](const std::string& text) {
    if (!text.empty() && sink) sink(text);
  };
  Utf8StreamDecoder utf8;
  StopFilter stops(stops_);
  last_.end = ReplyStats::End::Limit;
  for (int64_t i = 0; i < options_.max_reply_tokens; ++i) {
    const int32_t token = session_.sample();
    if (std::find(end_tokens_.begin(), end_tokens_.end(), token) != end_tokens_.end()) {
      last_.end = ReplyStats::End::EndOfText;  // not fed, as the official code never feeds it
      break;
    }
    session_.sampler().accept(token);
    const int32_t one[1] = {token};
    session_.feed(one);
    ++last_.reply_tokens;
    const std::string_view bytes = tokenizer_.token_bytes(token);
    transcript_ += bytes;
    emit(stops.push(utf8.feed(bytes)));
    if (stops.matched() >= 0) {
      last_.end = stops.matched() == 0 ? ReplyStats::End::BlankLine : ReplyStats::End::StopString;
      break;
    }
  }
  if (stops.matched() < 0) {
    emit(stops.push(utf8.flush()));
    if (stops.matched() < 0) emit(stops.flush());
  }
  return stops.passed();
}

void ChatSession::save(const std::string& path) const {
  StateFile file = session_.snapshot();
  Json meta = {{"format", kChatFormat}, {"seed_base", options_.sampling.seed}, {"replies", replies_},
               {"last_seed", last_seed_}};
  if (before_reply_) {
    meta["regen_transcript_size"] = before_reply_->transcript_size;
    file.sections[kRegenStateSection] = to_bytes(before_reply_->state.data());
    file.sections[kRegenLogitsSection] = to_bytes(before_reply_->logits);
  }
  file.sections[kChatSection] = to_bytes(meta.dump());
  file.sections[kTranscriptSection] = to_bytes(transcript_);
  save_state_file(path, file);
}

void ChatSession::load(const std::string& path) {
  StateFile file = load_state_file(path, model_.state_shape(), model_.state_size());
  const StateFile previous = session_.snapshot();
  const auto chat = file.sections.find(kChatSection);
  if (chat == file.sections.end()) {
    // A plain state: the conversation starts from it.
    try {
      session_.restore(file);
    } catch (...) {
      session_.restore(previous);
      throw;
    }
    const auto logits = session_.has_logits() ? session_.logits() : std::span<const float>{};
    initial_ = CachedState{session_.state(), {logits.begin(), logits.end()}};
    reset();
    return;
  }

  // Everything is read and checked before anything changes.
  uint64_t seed_base = 0, replies = 0, last_seed = 0;
  std::optional<size_t> regen_size;
  const std::string_view meta_text(reinterpret_cast<const char*>(chat->second.data()), chat->second.size());
  const Json meta = Json::parse(meta_text, nullptr, /*allow_exceptions=*/false);
  try {
    if (!meta.is_object() || meta.at("format").get<int>() != kChatFormat) fail("");
    seed_base = meta.at("seed_base").get<uint64_t>();
    replies = meta.at("replies").get<uint64_t>();
    last_seed = meta.at("last_seed").get<uint64_t>();
    if (meta.contains("regen_transcript_size")) regen_size = meta.at("regen_transcript_size").get<size_t>();
  } catch (const std::exception&) {
    fail("{}: damaged chat save (unreadable chat section)", path);
  }
  const auto transcript = file.sections.find(kTranscriptSection);
  if (transcript == file.sections.end()) fail("{}: damaged chat save (no transcript)", path);
  std::string text(reinterpret_cast<const char*>(transcript->second.data()), transcript->second.size());
  std::optional<Checkpoint> before;
  if (regen_size) {
    const auto state = file.sections.find(kRegenStateSection);
    const auto logits = file.sections.find(kRegenLogitsSection);
    if (state == file.sections.end() || logits == file.sections.end() || *regen_size > text.size())
      fail("{}: damaged chat save (regeneration point)", path);
    before = Checkpoint{model_.new_state(), floats_of(logits->second, size_t(model_.config().n_vocab), path, "logits"),
                        *regen_size};
    const auto floats = floats_of(state->second, model_.state_size(), path, "state");
    std::copy(floats.begin(), floats.end(), before->state.data().begin());
  }
  try {
    session_.restore(file);
  } catch (...) {
    session_.restore(previous);
    throw;
  }
  options_.sampling.seed = seed_base;
  replies_ = replies;
  last_seed_ = last_seed;
  transcript_ = std::move(text);
  before_reply_ = std::move(before);
  last_ = {};
}

}  // namespace rwkv
