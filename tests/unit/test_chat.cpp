// Chat: the exact RWKV chat format, only new tokens fed per turn, regenerate,
// save/load, the prompt-state cache, and the chat/ask commands.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "model/loader.h"
#include "runtime/chat.h"
#include "runtime/prompt_cache.h"
#include "runtime/session.h"
#include "runtime/state_file.h"
#include "runtime/tokenizer.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::run_cli;

const std::string kModel = test::tiny_model("7v0-834K", "FP32");
const std::string kWorldModel = test::shared_path("models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.pth");

// Loaded once: every test only reads them.
const Model& tiny() {
  static const auto model = load_model(kModel);
  return *model;
}
const Tokenizer& bytes() {
  static const ByteTokenizer tokenizer;
  return tokenizer;
}

// Sampling where the seed matters (top-p 1 on a tiny model: near-uniform).
ChatOptions sampled(uint64_t seed, int64_t max_tokens = 24) {
  ChatOptions o;
  o.sampling.top_p = 1.0f;
  o.sampling.seed = seed;
  o.max_reply_tokens = max_tokens;
  return o;
}

// Greedy, with '\n' forced: every reply is the blank line at once.
ChatOptions blank_replies() {
  ChatOptions o;
  o.sampling.temperature = 0.0f;
  o.sampling.logit_bias[int32_t('\n')] = 1000.0f;
  return o;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// ---------------------------------------------------------------- format

TEST(ChatFormat, CleansMessagesAsTheOfficialChat) {
  EXPECT_EQ(clean_chat_text("  hello \t"), "hello");
  EXPECT_EQ(clean_chat_text("a\r\nb"), "a\nb");
  EXPECT_EQ(clean_chat_text("a\n\nb\n\n\n\nc"), "a\nb\nc");
  EXPECT_EQ(clean_chat_text("a\r\n\r\n\r\nb"), "a\nb");
  EXPECT_EQ(clean_chat_text("a\n \nb"), "a\n \nb");  // not a blank line: kept, as re.sub(r'\n{2,}') keeps it
  EXPECT_EQ(clean_chat_text("a\rb"), "a\rb");
  EXPECT_EQ(clean_chat_text("\n\n  x  \n\n"), "x");
  // Python's strip() also removes Unicode spaces (U+00A0, U+3000) but not U+200B.
  EXPECT_EQ(clean_chat_text("\xc2\xa0\xe3\x80\x80hi\xe3\x80\x80"), "hi");
  EXPECT_EQ(clean_chat_text("\xe2\x80\x8bhi"), "\xe2\x80\x8bhi");
  EXPECT_EQ(clean_chat_text(" \n\r\n\t "), "");
  EXPECT_EQ(clean_chat_text("caf\xc3\xa9 "), "caf\xc3\xa9");
}

TEST(ChatFormat, TurnsAndPrefixesFollowTheTemplates) {
  EXPECT_EQ(system_turn(" Be brief.\n\n\nAlways. "), "System: Be brief.\nAlways.\n\n");
  EXPECT_EQ(user_turn("hi\r\n"), "User: hi\n\n");
  EXPECT_EQ(assistant_prefix(ThinkMode::Off), "Assistant:");
  EXPECT_EQ(assistant_prefix(ThinkMode::Think), "Assistant: <think");
  EXPECT_EQ(assistant_prefix(ThinkMode::FakeThink), "Assistant: <think>\n</think");
}

TEST(ChatFormat, AskPutsTheQuestionBeforeAndAfterTheDocument) {
  EXPECT_EQ(ask_message(" Who? ", "Line one.\n\n\nLine two.\r\n"), "Who?\nLine one.\nLine two.\nWho?");
  EXPECT_THROW(ask_message(" \n ", "doc"), Error);
  EXPECT_THROW(ask_message("q", "\n\n"), Error);
}

TEST(ChatFormat, DefaultsAreTheOfficialChatDemo) {
  const SamplerParams p = chat_default_sampling();
  EXPECT_EQ(p.temperature, 1.0f);
  EXPECT_EQ(p.top_p, 0.3f);
  EXPECT_EQ(p.presence_penalty, 0.5f);
  EXPECT_EQ(p.frequency_penalty, 0.5f);
  EXPECT_EQ(p.penalty_decay, 0.996f);
  EXPECT_EQ(default_end_tokens(bytes()), std::vector<int32_t>{});
}

// ---------------------------------------------------------------- transcript

TEST(ChatSession, TranscriptIsExactlyTheChatFormat) {
  ChatOptions o = blank_replies();
  o.system = " Be  nice\n\n\nplease ";
  ChatSession chat(tiny(), bytes(), o);
  EXPECT_EQ(chat.transcript(), "System: Be  nice\nplease\n\n");
  EXPECT_EQ(chat.say("one"), "");
  EXPECT_EQ(chat.last_reply().end, ReplyStats::End::BlankLine);
  EXPECT_EQ(chat.last_reply().reply_tokens, 2);
  EXPECT_EQ(chat.say("  two\r\n\r\n\r\nlines "), "");
  EXPECT_EQ(chat.say("three"), "");
  EXPECT_EQ(chat.transcript(),
            "System: Be  nice\nplease\n\n"
            "User: one\n\nAssistant:\n\n"
            "User: two\nlines\n\nAssistant:\n\n"
            "User: three\n\nAssistant:\n\n");
}

TEST(ChatSession, NoSystemTurnWithoutASystemPrompt) {
  ChatSession chat(tiny(), bytes(), blank_replies());
  EXPECT_EQ(chat.transcript(), "");
  chat.say("hi");
  EXPECT_EQ(chat.transcript(), "User: hi\n\nAssistant:\n\n");
}

TEST(ChatSession, ThinkingModesOpenTheReplyAsTheTemplatesSay) {
  ChatOptions o = blank_replies();
  o.think = ThinkMode::Think;
  ChatSession think(tiny(), bytes(), o);
  think.say("q");
  EXPECT_EQ(think.transcript(), "User: q\n\nAssistant: <think\n\n");
  o.think = ThinkMode::FakeThink;
  ChatSession fake(tiny(), bytes(), o);
  fake.say("q");
  EXPECT_EQ(fake.transcript(), "User: q\n\nAssistant: <think>\n</think\n\n");
}

TEST(ChatSession, AReplyCutShortIsClosedBeforeTheNextTurn) {
  ChatOptions o = sampled(5, 12);
  ChatSession chat(tiny(), bytes(), o);
  const std::string first = chat.say("hello");
  ASSERT_EQ(chat.last_reply().end, ReplyStats::End::Limit);
  EXPECT_EQ(chat.last_reply().reply_tokens, 12);
  EXPECT_EQ(first.size(), 12u);  // byte tokens, no stop string in them
  chat.say("again");
  const std::string expected_start = "User: hello\n\nAssistant:" + first + "\n\nUser: again\n\nAssistant:";
  EXPECT_EQ(chat.transcript().substr(0, expected_start.size()), expected_start);
}

TEST(ChatSession, StopStringsAndEndOfTextEndTheReply) {
  ChatOptions o;
  o.sampling.temperature = 0.0f;
  o.max_reply_tokens = 30;
  ChatSession free_run(tiny(), bytes(), o);
  const std::string text = free_run.say("hello");
  ASSERT_EQ(text.size(), 30u) << "the greedy reply should run to the limit";

  o.stop_strings = {text.substr(10, 3)};
  ChatSession stopped(tiny(), bytes(), o);
  EXPECT_EQ(stopped.say("hello"), text.substr(0, text.find(o.stop_strings[0])));
  EXPECT_EQ(stopped.last_reply().end, ReplyStats::End::StopString);

  o.stop_strings.clear();
  o.end_tokens = std::vector<int32_t>{int32_t(uint8_t(text[0]))};
  ChatSession ended(tiny(), bytes(), o);
  EXPECT_EQ(ended.say("hello"), "");
  EXPECT_EQ(ended.last_reply().end, ReplyStats::End::EndOfText);
  EXPECT_EQ(ended.last_reply().reply_tokens, 0);
  EXPECT_EQ(ended.transcript(), "User: hello\n\nAssistant:");  // end-of-text is never fed
}

TEST(ChatSession, RejectsBadMessagesWithoutChangingAnything) {
  ChatSession chat(tiny(), bytes(), sampled(1));
  chat.say("hi");
  const std::string before = chat.transcript();
  const int64_t fed = chat.session().tokens_fed();
  try {
    chat.say("bad \xff byte");
    FAIL() << "non-UTF-8 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("UTF-8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(chat.say(" \n\n \r\n"), Error);
  EXPECT_EQ(chat.transcript(), before);
  EXPECT_EQ(chat.session().tokens_fed(), fed);
  ChatOptions bad = sampled(1);
  bad.max_reply_tokens = 0;
  EXPECT_THROW(ChatSession(tiny(), bytes(), bad), Error);
  bad = sampled(1);
  bad.stop_strings = {""};
  EXPECT_THROW(ChatSession(tiny(), bytes(), bad), Error);
}

// ---------------------------------------------------------------- tokens fed

TEST(ChatSession, EachTurnFeedsOnlyItsNewTokens) {
  ChatOptions o = sampled(3, 16);
  o.system = "You are terse.";
  ChatSession chat(tiny(), bytes(), o);
  EXPECT_EQ(chat.session().tokens_fed(), int64_t(system_turn(o.system).size()));
  int64_t fed = chat.session().tokens_fed();
  for (const std::string message : {"first question", "second one", "and a third"}) {
    const bool open = !chat.transcript().ends_with("\n\n");
    chat.say(message);
    const int64_t new_prompt = int64_t((open ? 2 : 0) + user_turn(message).size() + assistant_prefix(ThinkMode::Off).size());
    EXPECT_EQ(chat.last_reply().prompt_tokens, new_prompt);
    EXPECT_EQ(chat.session().tokens_fed() - fed, new_prompt + chat.last_reply().reply_tokens);
    fed = chat.session().tokens_fed();
  }
}

TEST(ChatSession, TheStateIsTheTranscriptRead) {
  ChatOptions o = sampled(9, 10);
  o.system = "Hi.";
  ChatSession chat(tiny(), bytes(), o);
  chat.say("one");
  const int64_t n1 = chat.last_reply().reply_tokens;
  const bool closed = chat.transcript().ends_with("\n\n");
  chat.say("two");
  const int64_t n2 = chat.last_reply().reply_tokens;
  // The same pieces fed by hand: system turn, each user turn, each reply byte.
  Session manual(tiny(), {});
  const std::string& t = chat.transcript();
  size_t pos = 0;
  auto feed_piece = [&](const std::string& piece) {
    ASSERT_EQ(t.compare(pos, piece.size(), piece), 0) << "at " << pos;
    const auto ids = bytes().encode(piece);
    manual.feed(ids, o.chunk);
    pos += piece.size();
  };
  auto feed_reply = [&](int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const int32_t one[1] = {int32_t(uint8_t(t[pos++]))};
      manual.feed(one);
    }
  };
  feed_piece(system_turn("Hi."));
  feed_piece("User: one\n\nAssistant:");
  feed_reply(n1);
  feed_piece(std::string(closed ? "" : "\n\n") + "User: two\n\nAssistant:");
  feed_reply(n2);
  EXPECT_EQ(pos, t.size());
  EXPECT_TRUE(manual.state() == chat.session().state());
  EXPECT_TRUE(same_bits(manual.logits(), chat.session().logits()));
}

// ---------------------------------------------------------------- regenerate

TEST(ChatSession, RegenerateDependsOnlyOnTheSeed) {
  ChatSession chat(tiny(), bytes(), sampled(4, 30));
  EXPECT_FALSE(chat.can_regenerate());
  EXPECT_THROW(chat.regenerate(), Error);
  chat.say("tell me");
  const std::string first = chat.say("a story");
  const uint64_t seed = chat.last_reply_seed();
  const std::string prefix = chat.transcript().substr(0, chat.transcript().size() - first.size());
  const int64_t fed = chat.session().tokens_fed();

  EXPECT_EQ(chat.regenerate(seed), first);
  EXPECT_EQ(chat.transcript(), prefix + first);
  EXPECT_EQ(chat.last_reply().prompt_tokens, 0);
  EXPECT_EQ(chat.session().tokens_fed() - fed, 30);  // the new reply only

  const std::string other = chat.regenerate(seed + 1);
  EXPECT_NE(other, first);
  EXPECT_EQ(chat.regenerate(seed + 1), other);
  EXPECT_EQ(chat.transcript(), prefix + other);
  EXPECT_NE(chat.regenerate(), first);  // the next per-reply seed
}

TEST(ChatSession, SameSeedSameConversationOtherSeedAnother) {
  auto run = [](uint64_t seed) {
    ChatSession chat(tiny(), bytes(), sampled(seed));
    return chat.say("a") + "|" + chat.say("b");
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

// ---------------------------------------------------------------- save / load

TEST(ChatSession, SaveLoadContinueEqualsAnUninterruptedConversation) {
  test::TempDir dir;
  ChatOptions o = sampled(21, 20);
  o.system = "Be kind.";
  ChatSession whole(tiny(), bytes(), o);
  const std::string w1 = whole.say("one"), w2 = whole.say("two"), w3 = whole.say("three");

  ChatSession first(tiny(), bytes(), o);
  EXPECT_EQ(first.say("one"), w1);
  first.save(dir / "chat.state");

  ChatSession second(tiny(), bytes(), sampled(999, 20));  // the seeds come from the file
  second.load(dir / "chat.state");
  EXPECT_EQ(second.transcript(), first.transcript());
  EXPECT_EQ(second.say("two"), w2);
  EXPECT_EQ(second.say("three"), w3);
  EXPECT_EQ(second.transcript(), whole.transcript());
  EXPECT_TRUE(second.session().state() == whole.session().state());
  EXPECT_TRUE(same_bits(second.session().logits(), whole.session().logits()));

  // The state before the last reply is saved too: /regen works after /load.
  ChatSession third(tiny(), bytes(), o);
  third.load(dir / "chat.state");
  ASSERT_TRUE(third.can_regenerate());
  EXPECT_EQ(third.regenerate(first.last_reply_seed()), w1);
  EXPECT_EQ(third.transcript(), first.transcript());
}

TEST(ChatSession, APlainStateFileBecomesTheStartingPoint) {
  test::TempDir dir;
  Session session(tiny(), {});
  const auto ids = bytes().encode("Some context.\n\n");
  session.feed(ids);
  save_state_file(dir / "plain.state", session.snapshot());

  ChatOptions o = blank_replies();
  o.system = "Sys.";
  ChatSession chat(tiny(), bytes(), o);
  chat.load(dir / "plain.state");
  EXPECT_EQ(chat.transcript(), "System: Sys.\n\n");
  // The loaded state, then the system turn: as feeding both by hand.
  Session manual(tiny(), {});
  manual.feed(ids);
  manual.feed(bytes().encode("System: Sys.\n\n"), o.chunk);
  EXPECT_TRUE(manual.state() == chat.session().state());
  chat.say("hi");
  chat.reset();  // back to the loaded state, not the fresh one
  EXPECT_TRUE(manual.state() == chat.session().state());
  EXPECT_EQ(chat.transcript(), "System: Sys.\n\n");
}

TEST(ChatSession, BadFilesFailAndTheConversationGoesOn) {
  test::TempDir dir;
  ChatSession chat(tiny(), bytes(), sampled(2, 8));
  chat.say("hello");
  chat.save(dir / "good.state");
  const std::string transcript = chat.transcript();
  const State state = chat.session().state();

  EXPECT_THROW(chat.load(dir / "missing.state"), Error);
  auto bytes_of_file = test::read_bytes(dir / "good.state");
  bytes_of_file.resize(bytes_of_file.size() / 2);
  test::write_bytes(dir / "cut.state", bytes_of_file);
  EXPECT_THROW(chat.load(dir / "cut.state"), Error);
  // A conversation of another model is refused.
  const auto world = load_model(kWorldModel);
  const auto tokenizer = make_tokenizer("", world->config().n_vocab, kWorldModel);
  ChatSession other(*world, *tokenizer, sampled(1, 3));
  other.say("hi");
  other.save(dir / "world.state");
  EXPECT_THROW(chat.load(dir / "world.state"), Error);
  EXPECT_THROW(chat.save(dir / "no-such-dir/x.state"), Error);

  EXPECT_EQ(chat.transcript(), transcript);
  EXPECT_TRUE(chat.session().state() == state);
  chat.say("still here");
}

// ---------------------------------------------------------------- prompt cache

State marked_state(float value) {
  State s(StateShape{}, 4);
  std::fill(s.data().begin(), s.data().end(), value);
  return s;
}

TEST(PromptCache, ReturnsTheLongestCachedPrefix) {
  PromptCache cache(1 << 20);
  const std::vector<float> logits = {0.5f};
  ASSERT_TRUE(cache.insert(std::vector<int32_t>{1, 2, 3}, marked_state(3), logits));
  ASSERT_TRUE(cache.insert(std::vector<int32_t>{1, 2, 3, 4, 5}, marked_state(5), logits));
  ASSERT_TRUE(cache.insert(std::vector<int32_t>{1, 2, 9}, marked_state(9), logits));
  ASSERT_TRUE(cache.insert(std::vector<int32_t>{7}, marked_state(7), logits));

  auto hit = cache.lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6});
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 5u);
  EXPECT_EQ(hit->value->state.data()[0], 5.0f);
  EXPECT_EQ(hit->value->logits, logits);
  hit = cache.lookup(std::vector<int32_t>{1, 2, 3, 4});
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 3u);
  EXPECT_EQ(hit->value->state.data()[0], 3.0f);
  hit = cache.lookup(std::vector<int32_t>{1, 2, 9});  // all of it
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->value->state.data()[0], 9.0f);
  EXPECT_FALSE(cache.lookup(std::vector<int32_t>{1, 2}));
  EXPECT_FALSE(cache.lookup(std::vector<int32_t>{2, 1, 3}));
  EXPECT_FALSE(cache.lookup(std::vector<int32_t>{}));
  // Aligned lookups skip prefixes off the chunk grid, but not the whole query.
  hit = cache.lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6}, 3);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 3u);
  hit = cache.lookup(std::vector<int32_t>{1, 2, 3, 4, 5}, 4);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 5u);
  // Inserting the same tokens again replaces the entry.
  ASSERT_TRUE(cache.insert(std::vector<int32_t>{1, 2, 3}, marked_state(33), logits));
  EXPECT_EQ(cache.lookup(std::vector<int32_t>{1, 2, 3, 8})->value->state.data()[0], 33.0f);
  EXPECT_EQ(cache.stats().entries, 4u);
  EXPECT_THROW(cache.insert(std::vector<int32_t>{}, marked_state(0), logits), Error);
}

TEST(PromptCache, EvictsLeastRecentlyUsedWithinTheBudget) {
  const size_t entry = PromptCache::entry_bytes(2, 4, 1);
  PromptCache cache(2 * entry + entry / 2);  // room for two
  const std::vector<float> logits = {0.0f};
  const std::vector<int32_t> a = {1, 1}, b = {2, 2}, c = {3, 3};
  ASSERT_TRUE(cache.insert(a, marked_state(1), logits));
  ASSERT_TRUE(cache.insert(b, marked_state(2), logits));
  ASSERT_TRUE(cache.lookup(a));  // a is now the most recently used
  ASSERT_TRUE(cache.insert(c, marked_state(3), logits));
  EXPECT_TRUE(cache.lookup(a));
  EXPECT_FALSE(cache.lookup(b));
  EXPECT_TRUE(cache.lookup(c));
  const auto stats = cache.stats();
  EXPECT_EQ(stats.entries, 2u);
  EXPECT_EQ(stats.evictions, 1u);
  EXPECT_LE(stats.bytes, stats.byte_budget);

  // An entry bigger than the whole budget is not kept (and evicts nothing).
  const std::vector<int32_t> long_prompt(3 * entry, 5);
  EXPECT_FALSE(cache.insert(long_prompt, marked_state(4), logits));
  EXPECT_FALSE(cache.lookup(long_prompt));
  EXPECT_EQ(cache.stats().entries, 2u);
  // A hit stays usable after its entry is evicted.
  auto hit = cache.lookup(a);
  cache.clear();
  EXPECT_EQ(hit->value->state.data()[0], 1.0f);
  EXPECT_EQ(cache.stats().bytes, 0u);
}

std::vector<int32_t> prompt_ids(size_t n, int32_t salt) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = int32_t((i * 37 + size_t(salt) * 11) % 200 + 32);
  return ids;
}

TEST(PromptCache, CachedContinuationIsBitIdenticalToAnUncachedRun) {
  const auto base = prompt_ids(30, 1);
  auto longer = base;
  const auto extra = prompt_ids(13, 2);
  longer.insert(longer.end(), extra.begin(), extra.end());

  for (int64_t chunk : {1, 8}) {
    SCOPED_TRACE(chunk);
    PromptCache cache(64 << 20);
    Session cached(tiny(), {});
    EXPECT_EQ(feed_cached(cached, cache, base, chunk), base.size());
    // RNN mode resumes at the end of the earlier prompt; chunked mode at its
    // last chunk boundary (24), to keep the chunks an uncached run feeds.
    const size_t expected_fed = chunk == 1 ? extra.size() : longer.size() - 24;
    const int64_t before = cached.tokens_fed();
    EXPECT_EQ(feed_cached(cached, cache, longer, chunk), expected_fed);
    EXPECT_EQ(cached.tokens_fed() - before, int64_t(expected_fed));

    Session uncached(tiny(), {});
    uncached.feed(longer, chunk);
    EXPECT_TRUE(same_bits(cached.logits(), uncached.logits()));
    EXPECT_TRUE(cached.state() == uncached.state());

    // The same prompt again: nothing fed, the same logits.
    EXPECT_EQ(feed_cached(cached, cache, longer, chunk), 0u);
    EXPECT_TRUE(same_bits(cached.logits(), uncached.logits()));
  }
}

TEST(PromptCache, AnyPrefixInSequenceModeEqualsAOneCallRunToRounding) {
  const auto base = prompt_ids(20, 3);
  auto longer = base;
  longer.push_back(65);
  longer.push_back(66);
  PromptCache cache(64 << 20);
  Session cached(tiny(), {});
  feed_cached(cached, cache, base, 0);
  EXPECT_EQ(feed_cached(cached, cache, longer, 0), 2u);
  Session uncached(tiny(), {});
  uncached.feed(longer);
  EXPECT_LE(test::max_abs_diff(cached.logits(), uncached.logits()), 1e-4f);
}

TEST(PromptCache, SharedBetweenThreads) {
  const size_t entry = PromptCache::entry_bytes(8, 4, 1);
  PromptCache cache(5 * entry);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        std::vector<int32_t> ids(8, t);
        ids[7] = i % 7;
        cache.insert(ids, marked_state(float(t * 100 + i % 7)), std::vector<float>{0.0f});
        ids.push_back(1);
        if (auto hit = cache.lookup(ids))
          if (hit->length != 8 || hit->value->state.data()[0] != float(t * 100 + i % 7)) ++wrong;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(cache.stats().bytes, cache.stats().byte_budget);
  EXPECT_LE(cache.stats().entries, 5u);
}

TEST(PromptCache, ChatResetReadsTheSystemPromptOnce) {
  PromptCache cache(64 << 20);
  ChatOptions o = blank_replies();
  o.system = "A long system prompt that is the same for every conversation.";
  ChatSession chat(tiny(), bytes(), o, &cache);
  EXPECT_EQ(chat.last_reply().prompt_tokens, int64_t(system_turn(o.system).size()));
  const State after_system = chat.session().state();
  chat.say("hi");
  const int64_t fed = chat.session().tokens_fed();
  chat.reset();
  EXPECT_EQ(chat.session().tokens_fed(), fed);  // nothing read again
  EXPECT_EQ(chat.last_reply().prompt_tokens, 0);
  EXPECT_TRUE(chat.session().state() == after_system);
  EXPECT_EQ(chat.transcript(), system_turn(o.system));
  ChatSession second(tiny(), bytes(), o, &cache);  // another conversation, same cache
  EXPECT_EQ(second.session().tokens_fed(), 0);
  EXPECT_TRUE(second.session().state() == after_system);
}

// ---------------------------------------------------------------- CLI

std::string chat_cli(const std::string& input, const std::string& args, bool stdout_only = true, int* code = nullptr) {
  const auto r = run_cli("chat -m " + kModel + " " + args + " < " + input, stdout_only);
  if (code) *code = r.exit_code;
  else EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

TEST(ChatCli, PipedLinesAreTurnsAndTheOutputIsTheConversation) {
  test::TempDir dir;
  test::write_bytes(dir / "in.txt", std::vector<char>{'h', 'i', '\n', '\n', 'm', 'o', 'r', 'e', '\n'});
  const std::string out = chat_cli(dir / "in.txt", "--seed 8 -n 15 --system 'Be nice.'");

  ChatOptions o;
  o.system = "Be nice.";
  o.sampling.seed = 8;
  o.max_reply_tokens = 15;
  ChatSession chat(tiny(), bytes(), o);
  const std::string r1 = chat.say("hi"), r2 = chat.say("more");
  EXPECT_EQ(out, "User: hi\n\nAssistant:" + r1 + "\n\nUser: more\n\nAssistant:" + r2 + "\n\n");
}

TEST(ChatCli, CommandsWorkAndUnknownOnesDoNotStopTheChat) {
  test::TempDir dir;
  const std::string save = dir / "conv.state";
  const std::string script = "first\n/bogus\n/regen\n/save " + save + "\n/load " + (dir / "missing") +
                             "\n\xff\xfe\n//slash\n/reset\n/help\n/quit\nnever\n";
  test::write_bytes(dir / "in.txt", std::vector<char>(script.begin(), script.end()));
  const std::string all = chat_cli(dir / "in.txt", "--seed 3 -n 6", /*stdout_only=*/false);
  EXPECT_NE(all.find("unknown command /bogus"), std::string::npos) << all;
  EXPECT_NE(all.find("not valid UTF-8"), std::string::npos) << all;
  EXPECT_NE(all.find("missing"), std::string::npos) << all;
  EXPECT_NE(all.find("/regen"), std::string::npos) << all;  // the help text
  EXPECT_EQ(all.find("never"), std::string::npos) << all;

  const std::string out = chat_cli(dir / "in.txt", "--seed 3 -n 6");
  // first, its regenerated reply, then "/slash" as a message.
  size_t replies = 0;
  for (size_t at = out.find("Assistant:"); at != std::string::npos; at = out.find("Assistant:", at + 1)) ++replies;
  EXPECT_EQ(replies, 3u) << out;
  EXPECT_NE(out.find("User: /slash\n"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(save));
}

TEST(ChatCli, StateInContinuesASavedConversation) {
  test::TempDir dir;
  const std::string both = "one\ntwo\n", first = "one\n/save " + (dir / "s.state") + "\n", second = "two\n";
  test::write_bytes(dir / "both.txt", std::vector<char>(both.begin(), both.end()));
  test::write_bytes(dir / "first.txt", std::vector<char>(first.begin(), first.end()));
  test::write_bytes(dir / "second.txt", std::vector<char>(second.begin(), second.end()));
  const std::string whole = chat_cli(dir / "both.txt", "--seed 5 -n 10");
  const std::string a = chat_cli(dir / "first.txt", "--seed 5 -n 10");
  const std::string b = chat_cli(dir / "second.txt", "--seed 77 -n 10 --state-in " + (dir / "s.state"));
  EXPECT_EQ(a + b, whole);
}

TEST(ChatCli, WorldTokenizerModel) {
  test::TempDir dir;
  test::write_bytes(dir / "in.txt", std::vector<char>{'h', 'i', '\n'});
  const auto r = run_cli("chat -m " + kWorldModel + " --seed 1 -n 5 --think < " + (dir / "in.txt"), true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(r.output.starts_with("User: hi\n\nAssistant: <think")) << r.output;

  const auto model = load_model(kWorldModel);
  const auto tokenizer = make_tokenizer("", model->config().n_vocab, kWorldModel);
  ChatOptions o;
  o.think = ThinkMode::Think;
  o.sampling.seed = 1;
  o.max_reply_tokens = 5;
  ChatSession chat(*model, *tokenizer, o);
  const std::string reply = chat.say("hi");
  EXPECT_EQ(r.output, "User: hi\n\nAssistant: <think" + reply + "\n\n");
  EXPECT_EQ(chat.last_reply().prompt_tokens, int64_t(tokenizer->encode("User: hi\n\nAssistant: <think").size()));
}

TEST(AskCli, AnswersInTheChatFormat) {
  test::TempDir dir;
  const std::string doc = "The cat is black.\n\n\nIt sleeps all day.\n";
  test::write_bytes(dir / "doc.txt", std::vector<char>(doc.begin(), doc.end()));
  const auto r = run_cli("ask -m " + kModel + " --document " + (dir / "doc.txt") +
                             " -q 'What colour is the cat?' --seed 4 -n 20",
                         true);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  ChatOptions o;
  o.sampling.seed = 4;
  o.max_reply_tokens = 20;
  ChatSession chat(tiny(), bytes(), o);
  std::string reply = chat.say(ask_message("What colour is the cat?", doc));
  EXPECT_EQ(chat.transcript().substr(0, chat.transcript().size() - reply.size()),
            "User: What colour is the cat?\nThe cat is black.\nIt sleeps all day.\nWhat colour is the cat?\n\n"
            "Assistant:");
  while (reply.starts_with(' ')) reply.erase(0, 1);
  EXPECT_EQ(r.output, reply + "\n");

  const auto world = run_cli("ask -m " + kWorldModel + " --document " + (dir / "doc.txt") + " -q 'Colour?' -n 4");
  EXPECT_EQ(world.exit_code, 0) << world.output;
}

TEST(AskCli, BadInputGetsClearErrors) {
  test::TempDir dir;
  test::write_bytes(dir / "doc.txt", std::vector<char>{'o', 'k', '\n'});
  test::write_bytes(dir / "bad.txt", std::vector<char>{'a', '\xff', 'b'});
  test::write_bytes(dir / "empty.txt", std::vector<char>{'\n', ' ', '\n'});
  const std::string base = "ask -m " + kModel + " ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--document " + (dir / "missing.txt") + " -q x", "cannot read the document"},
      {"--document " + dir / "" + " -q x", "not a regular file"},
      {"--document " + (dir / "doc.txt") + " -q ' \n '", "question is empty"},
      {"--document " + (dir / "doc.txt") + " -q " + shell_quote("a\xff"), "question is not valid UTF-8"},
      {"--document " + (dir / "bad.txt") + " -q x", "not valid UTF-8"},
      {"--document " + (dir / "empty.txt") + " -q x", "is empty"},
      {"-q x", "--document"},
      {"--document " + (dir / "doc.txt") + " -q x -n 0", "-n must be a positive number"},
  };
  for (const auto& [args, message] : cases) {
    const auto r = run_cli(base + args);
    EXPECT_NE(r.exit_code, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
  }
}

TEST(ChatCli, BadArgumentsGetClearErrors) {
  int code = 0;
  const std::string out = chat_cli("/dev/null", "--system " + shell_quote("\xff"), false, &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("--system is not valid UTF-8"), std::string::npos) << out;
  const std::string missing = chat_cli("/dev/null", "--state-in /nonexistent/x.state", false, &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(missing.find("/nonexistent/x.state"), std::string::npos) << missing;
  const std::string zero = chat_cli("/dev/null", "-n 0", false, &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(zero.find("-n must be a positive number"), std::string::npos) << zero;
  const std::string both = chat_cli("/dev/null", "--think --fake-think", false, &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(both.find("excludes"), std::string::npos) << both;
}

}  // namespace
}  // namespace rwkv
