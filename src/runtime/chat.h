// Chat in the RWKV format, as the official chat scripts and the G1 templates
// (RWKV-LM/RWKV-v7/RWKV7-G1x-templates.txt) write it:
//
//   System: SYSTEM\n\nUser: MESSAGE\n\nAssistant: REPLY\n\nUser: MESSAGE\n\nAssistant:
//
// The system turn is optional. A blank line ends every turn, so messages are
// cleaned first (\r\n -> \n, runs of \n\n+ -> \n, then stripped) and a reply
// ends at the first blank line it generates (or at end-of-text). G1 thinking
// mode opens the reply with "Assistant: <think"; the templates' fake thinking
// (a fast non-thinking answer from a thinking model) with
// "Assistant: <think>\n</think".
//
// A ChatSession keeps the whole conversation in the recurrent state, so each
// turn feeds only its new tokens. It is one conversation: use it from one
// thread at a time (sessions of the same model may run in parallel).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "runtime/prompt_cache.h"
#include "runtime/sampler.h"
#include "runtime/session.h"
#include "runtime/tokenizer.h"

namespace rwkv {

enum class ThinkMode { Off, Think, FakeThink };

// The official clean-up of a System/User message: \r\n -> \n, every run of two
// or more \n -> one \n (a blank line would end the turn), then leading and
// trailing whitespace stripped as Python's str.strip() does (including the
// Unicode spaces, e.g. U+00A0 and U+3000).
std::string clean_chat_text(std::string_view text);

inline constexpr std::string_view kTurnEnd = "\n\n";
std::string system_turn(std::string_view text);  // "System: TEXT\n\n", TEXT cleaned
std::string user_turn(std::string_view text);    // "User: TEXT\n\n", TEXT cleaned
// What opens the assistant's turn; the model writes the rest.
std::string_view assistant_prefix(ThinkMode mode);

// The user message for a question about a document: the question, the
// document, and the question again. An RNN reads once, front to back, so it
// recalls best what it was told to look for before reading; the repeat puts
// the question next to the answer. Fails if either is empty once cleaned.
std::string ask_message(std::string_view question, std::string_view document);

// Sampling of the official chat demo (ChatRWKV API_DEMO_CHAT.py): temperature
// 1.0, top-p 0.3, presence and frequency penalties 0.5, decay 0.996.
SamplerParams chat_default_sampling();

// End-of-text ids for `tokenizer`: 0 for World (the templates' end_of_doc) and
// for vocabularies whose id 0 is <|endoftext|>; none for bytes.
std::vector<int32_t> default_end_tokens(const Tokenizer& tokenizer);

struct ChatOptions {
  std::string system;  // empty: no system turn
  ThinkMode think = ThinkMode::Off;
  // sampling.seed is the base of the per-reply seeds (see ChatSession).
  SamplerParams sampling = chat_default_sampling();
  int64_t max_reply_tokens = 4096;
  std::vector<std::string> stop_strings;           // end a reply besides the blank line
  std::optional<std::vector<int32_t>> end_tokens;  // nullopt: default_end_tokens()
  int64_t chunk = 256;  // prompt tokens per forward call, as the official CHUNK_LEN
};

// Receives a reply's text as it is generated (whole UTF-8 characters where
// the model makes them; never any of the stop string).
using TextSink = std::function<void(std::string_view)>;

struct ReplyStats {
  enum class End { BlankLine, EndOfText, StopString, Limit };
  int64_t prompt_tokens = 0;  // fed for the user's turn
  int64_t reply_tokens = 0;   // generated and fed
  End end = End::BlankLine;
};

class ChatSession {
 public:
  // `model`, `tokenizer` and `cache` (optional; states from the fresh state,
  // used for the system turn) must outlive the session. Feeds the system turn.
  ChatSession(const Model& model, const Tokenizer& tokenizer, ChatOptions options, PromptCache* cache = nullptr);

  // One turn: feeds "User: MESSAGE\n\nAssistant:" (with the think prefix) and
  // generates the reply, passing its text to `sink` as it comes. Returns the
  // reply: the generated text up to its end (without the blank line or stop
  // string). Fails, changing nothing, if the message is not valid UTF-8 or is
  // empty once cleaned.
  //
  // Penalties count the reply's own tokens only (as the official chat does),
  // and the n-th reply samples with its own seed derived from the base seed,
  // so a conversation replays exactly with the same seed.
  std::string say(std::string_view message, const TextSink& sink = {});

  // Replaces the last reply with a new one generated from the state before it.
  // With `seed` the reply uses that seed (last_reply_seed() reproduces the
  // reply replaced); without, the next per-reply seed. Fails if there is no
  // reply to regenerate.
  std::string regenerate(std::optional<uint64_t> seed = std::nullopt, const TextSink& sink = {});
  bool can_regenerate() const { return before_reply_.has_value(); }

  // Starts over: the initial state (fresh, or the plain state last loaded),
  // then the system turn.
  void reset();

  // Saves the conversation to a state file: the state, last logits, sampler,
  // the transcript, the per-reply seed position and the state before the last
  // reply (so /regen works after loading).
  void save(const std::string& path) const;
  // Loads a file written by save(), or any plain state file of this model (a
  // saved generation, a tuned initial state): that becomes the initial state
  // and the system turn is fed after it. Fails, changing nothing, on a bad file.
  void load(const std::string& path);

  // Everything the state has read in this conversation, as text (after a
  // plain state was loaded, what came after it).
  const std::string& transcript() const { return transcript_; }
  const ReplyStats& last_reply() const { return last_; }
  uint64_t last_reply_seed() const { return last_seed_; }
  const ChatOptions& options() const { return options_; }
  Session& session() { return session_; }
  const Session& session() const { return session_; }

 private:
  struct Checkpoint {
    State state;
    std::vector<float> logits;
    size_t transcript_size = 0;
  };

  void feed_text(const std::string& text);
  std::string generate_reply(uint64_t seed, const TextSink& sink);
  uint64_t next_seed();

  const Model& model_;
  const Tokenizer& tokenizer_;
  ChatOptions options_;
  PromptCache* cache_;
  Session session_;
  std::vector<int32_t> end_tokens_;
  std::vector<std::string> stops_;  // the blank line first
  std::optional<CachedState> initial_;  // a loaded plain state; nullopt: the fresh state
  std::string transcript_;
  uint64_t replies_ = 0;  // per-reply seeds drawn so far
  uint64_t last_seed_ = 0;
  std::optional<Checkpoint> before_reply_;
  ReplyStats last_;
};

}  // namespace rwkv
