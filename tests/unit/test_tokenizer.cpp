// Tokenizers: the World tokenizer gives exactly the official ids, every
// tokenizer round-trips any bytes, the streaming UTF-8 decoder holds back only
// what can still become a character, and bad vocabularies, ids and
// tokenizer/model pairings are clear errors (library and CLI).
//
// tests/data/tokenizer/world_goldens.jsonl holds one case per line:
// {"name": ..., "hex": input bytes in hex, "ids": [...]}. It was made by a
// script kept outside the repository that runs the OFFICIAL tokenizers on
// each input: RWKV_TOKENIZER from RWKV-LM's RWKV-v7/rwkv_v7_demo.py and
// TRIE_TOKENIZER from ChatRWKV's rwkv pip package (rwkv_tokenizer.py), both
// with rwkv_vocab_v20230424.txt, under Debian's /usr/bin/python3. The script
// asserts that the two official implementations agree and round-trip. Cases:
// English, Chinese, Japanese, Korean, Arabic, Hindi, Russian, Greek/Hebrew/
// Thai, emoji (ZWJ sequences, skin tones, flags, keycaps), code with tabs,
// whitespace runs, CRLF, control bytes, the empty string, invalid UTF-8
// (\xff\xfe, truncated and overlong sequences, surrogates, stray
// continuation bytes), lambada/demo texts from shared/data, and seeded random
// bytes, random mixed-script text and random glued token fragments.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <unordered_map>

#include "core/error.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_bpe.h"
#include "runtime/tokenizer_unicode.h"
#include "runtime/tokenizer_world.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::run_cli;
using test::TempDir;

const std::string kVocab = test::shared_path("tokenizers/rwkv_vocab_v20230424.txt");
const std::string kTinyModel = test::tiny_model("7v0-834K", "FP32");
const std::string kWorldModel = test::shared_path("models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.pth");

std::string golden_path(const std::string& name = "world_goldens.jsonl") {
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / "data/tokenizer" / name).string();
}

// Loaded once: parsing 65k lines per test would dominate the suite's time.
const WorldTokenizer& world() {
  static const WorldTokenizer t = WorldTokenizer::load(kVocab);
  return t;
}

struct Golden {
  std::string name;
  std::string bytes;
  std::vector<int32_t> ids;
};

// Reads the golden file. Its lines are written by our generator with a fixed
// key order, so a full JSON parser is not needed.
std::vector<Golden> read_goldens(const std::string& file = "world_goldens.jsonl") {
  std::ifstream in(golden_path(file));
  EXPECT_TRUE(in.good()) << golden_path(file);
  std::vector<Golden> out;
  std::string line;
  auto field = [&](const std::string& key, char open, char close) {
    const size_t k = line.find("\"" + key + "\": ");
    EXPECT_NE(k, std::string::npos) << line;
    const size_t a = line.find(open, k + key.size() + 3);
    const size_t b = line.find(close, a + 1);
    return line.substr(a + 1, b - a - 1);
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Golden g;
    g.name = field("name", '"', '"');
    const std::string hex = field("hex", '"', '"');
    for (size_t i = 0; i + 1 < hex.size(); i += 2) g.bytes += char(std::stoi(hex.substr(i, 2), nullptr, 16));
    std::stringstream ids(field("ids", '[', ']'));
    std::string item;
    while (std::getline(ids, item, ',')) g.ids.push_back(std::stoi(item));
    out.push_back(std::move(g));
  }
  return out;
}

// An independent, obviously correct (and slow) greedy longest match: try
// every length from the longest token down. Checks the trie on inputs the
// golden file does not have.
std::vector<int32_t> naive_encode(const WorldTokenizer& t, const std::string& s) {
  static const auto table = [&] {
    std::unordered_map<std::string, int32_t> m;
    for (int32_t id = 0; id < t.vocab_size(); ++id)
      if (!t.token_bytes(id).empty()) m.emplace(std::string(t.token_bytes(id)), id);
    return m;
  }();
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < s.size()) {
    for (size_t len = std::min<size_t>(128, s.size() - pos); len > 0; --len) {
      auto it = table.find(s.substr(pos, len));
      if (it != table.end()) {
        ids.push_back(it->second);
        pos += len;
        break;
      }
    }
  }
  return ids;
}

std::string random_bytes(std::mt19937& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = char(rng() & 0xFF);
  return s;
}

// Random text that stresses long matches: fragments of real tokens glued.
std::string random_glue(std::mt19937& rng, const WorldTokenizer& t, size_t pieces) {
  std::string s;
  for (size_t i = 0; i < pieces; ++i) {
    const auto token = t.token_bytes(int32_t(1 + rng() % 65529));
    s.append(token.substr(rng() % 2 ? 0 : rng() % token.size()));
  }
  return s;
}

// ---------------------------------------------------------------- World

TEST(TokenizerWorld, VocabularyShape) {
  const WorldTokenizer& t = world();
  EXPECT_EQ(t.name(), "world");
  EXPECT_EQ(t.token_count(), 65529u);
  EXPECT_EQ(t.vocab_size(), 65530);
  EXPECT_EQ(t.token_bytes(0), "");  // end of text: no bytes
  EXPECT_EQ(t.token_bytes(1), std::string(1, '\0'));
  EXPECT_EQ(t.token_bytes(256), "\xff");
  EXPECT_EQ(t.token_bytes(257), "\t\t");
  EXPECT_EQ(t.token_bytes(263), "\r\n");
  EXPECT_EQ(t.token_bytes(65529), std::string(128, ' '));
  // Every single byte is a token, so any input can be encoded.
  for (int b = 0; b < 256; ++b) EXPECT_EQ(t.encode(std::string(1, char(b))), std::vector<int32_t>{b + 1});
  EXPECT_THROW(t.token_bytes(65530), Error);
  EXPECT_THROW(t.token_bytes(-1), Error);
}

TEST(TokenizerWorld, MatchesOfficialTokenizer) {
  const auto goldens = read_goldens();
  ASSERT_GE(goldens.size(), 100u);
  for (const Golden& g : goldens) {
    EXPECT_EQ(world().encode(g.bytes), g.ids) << g.name;
    EXPECT_EQ(world().decode(g.ids), g.bytes) << g.name;
  }
}

TEST(TokenizerWorld, MatchesNaiveLongestMatchOnRandomInput) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 200; ++i) {
    const std::string s = i % 2 ? random_bytes(rng, rng() % 300) : random_glue(rng, world(), 1 + rng() % 30);
    EXPECT_EQ(world().encode(s), naive_encode(world(), s)) << "case " << i;
  }
}

TEST(TokenizerWorld, RoundTripsRandomBytes) {
  std::mt19937 rng(42);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_bytes(rng, rng() % 2000);
    EXPECT_EQ(world().decode(world().encode(s)), s) << "case " << i;
  }
  const std::string big = random_glue(rng, world(), 20000);
  EXPECT_EQ(world().decode(world().encode(big)), big);
}

TEST(TokenizerWorld, DecodeRejectsIdsOutOfRange) {
  const std::vector<int32_t> ids = {33155, 65530};
  try {
    world().decode(ids);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("65530"), std::string::npos) << e.what();
  }
}

// ----------------------------------------------------- Python literals

TEST(TokenizerLiteral, ParsesStrAndBytesLiterals) {
  EXPECT_EQ(parse_python_literal("'abc'"), "abc");
  EXPECT_EQ(parse_python_literal("\"it's\""), "it's");
  EXPECT_EQ(parse_python_literal("'\\'\\\"\\\\'"), "'\"\\");
  EXPECT_EQ(parse_python_literal("'\\n\\t\\r\\a\\b\\f\\v'"), "\n\t\r\a\b\f\v");
  EXPECT_EQ(parse_python_literal("'\\x00'"), std::string(1, '\0'));
  // In a str \xe9 is U+00E9 (UTF-8 C3 A9); in bytes it is the byte E9.
  EXPECT_EQ(parse_python_literal("'\\xe9'"), "\xc3\xa9");
  EXPECT_EQ(parse_python_literal("b'\\xe9'"), "\xe9");
  EXPECT_EQ(parse_python_literal("b\"\\xff\\x00a\""), std::string("\xff\0a", 3));
  EXPECT_EQ(parse_python_literal("'\\u200d'"), "\xe2\x80\x8d");
  EXPECT_EQ(parse_python_literal("'\\U0001F600'"), "\xf0\x9f\x98\x80");
  EXPECT_EQ(parse_python_literal("'\\101\\0'"), std::string("A\0", 2));
  EXPECT_EQ(parse_python_literal("'中文 😀'"), "中文 😀");
  EXPECT_EQ(parse_python_literal("u'x'"), "x");
  EXPECT_EQ(parse_python_literal("''"), "");
}

TEST(TokenizerLiteral, RejectsMalformedLiterals) {
  for (const char* bad : {"abc", "'abc", "'abc\"", "'a'b'", "'\\'", "'\\x4'", "'\\xzz'", "'\\u12'", "'\\ud800'",
                          "'\\U00110000'", "b'\\u1234'", "b'é'", "r'x'", "'\\q'", "'\\N{DASH}'", "'\xff'", "b'\\777'",
                          "\"", ""}) {
    EXPECT_THROW(parse_python_literal(bad), Error) << bad;
  }
}

// ----------------------------------------------------- bad vocabularies

// Expects parsing `text` to fail with a message containing each of `needles`.
void expect_vocab_error(const std::string& text, std::initializer_list<std::string> needles) {
  try {
    WorldTokenizer::parse(text, "vocab.txt");
    ADD_FAILURE() << "no error for: " << text;
  } catch (const Error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "expected '" << n << "' in: " << e.what();
  }
}

TEST(TokenizerVocab, ParsesSmallVocabulary) {
  const auto t = WorldTokenizer::parse("1 'a' 1\n2 'b' 1\n3 b'\\xff' 1\n5 'ab' 2\r\n6 'abb' 3\n", "v");
  EXPECT_EQ(t.vocab_size(), 7);
  EXPECT_EQ(t.token_count(), 5u);
  EXPECT_EQ(t.encode("abbab\xff"), (std::vector<int32_t>{6, 5, 3}));
  EXPECT_EQ(t.token_bytes(4), "");
  try {
    t.encode("abc");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("0x63"), std::string::npos) << e.what();
  }
}

TEST(TokenizerVocab, RejectsMalformedLines) {
  expect_vocab_error("1 'a' 1\n2 'b' 2\n", {"vocab.txt", "line 2", "1 bytes", "says 2"});
  expect_vocab_error("1 'a' 1\n2 'b\n", {"line 2"});
  expect_vocab_error("1 'a' 1\n\n3 'c' 1\n", {"line 2"});
  expect_vocab_error("x 'a' 1\n", {"line 1", "id"});
  expect_vocab_error("-1 'a' 1\n", {"line 1", "id"});
  expect_vocab_error("1 'a' one\n", {"line 1", "length"});
  expect_vocab_error("1 'a\\q' 2\n", {"line 1", "escape"});
  expect_vocab_error("1 'a' 1\n2 'b' 1\n1 'c' 1\n", {"line 3", "id 1", "line 1"});
  expect_vocab_error("1 'a' 1\n2 b'a' 1\n", {"line 2", "id 2", "id 1"});
  expect_vocab_error("1 '' 0\n", {"line 1", "empty"});
  expect_vocab_error("1 'a\rb' 3\n", {"line 1", "carriage"});
  expect_vocab_error("99999999999 'a' 1\n", {"line 1"});
  expect_vocab_error("", {"no tokens"});
}

TEST(TokenizerVocab, MissingFileIsAClearError) {
  try {
    WorldTokenizer::load("/nonexistent/vocab.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/vocab.txt"), std::string::npos) << e.what();
  }
}

// ----------------------------------------------------- make_tokenizer

TEST(TokenizerFactory, ChoosesByVocabularySize) {
  EXPECT_EQ(make_tokenizer("", 256)->name(), "bytes");
  EXPECT_EQ(make_tokenizer("", 65536, kWorldModel)->name(), "world");
  EXPECT_EQ(make_tokenizer("bytes", 65536)->name(), "bytes");
  EXPECT_EQ(make_tokenizer("world", 65536, kWorldModel)->vocab_size(), 65530);
  EXPECT_EQ(make_tokenizer(kVocab, 65536)->encode("Hello"), std::vector<int32_t>{33155});
  EXPECT_THROW(make_tokenizer("", 1000), Error);
}

TEST(TokenizerFactory, FindsVocabularyBesideModelTree) {
  // shared/models/<set>/<file> -> shared/tokenizers/
  const auto found = std::filesystem::path(find_world_vocab(kWorldModel));
  EXPECT_TRUE(std::filesystem::equivalent(found, kVocab)) << found;
}

TEST(TokenizerFactory, MismatchNamesBothSizes) {
  try {
    make_tokenizer("world", 256, kWorldModel);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("65530"), std::string::npos) << m;
    EXPECT_NE(m.find("256"), std::string::npos) << m;
  }
}

TEST(TokenizerBytes, RoundTripsAndRejectsLargeIds) {
  const ByteTokenizer t;
  std::mt19937 rng(7);
  const std::string s = random_bytes(rng, 5000);
  const auto ids = t.encode(s);
  ASSERT_EQ(ids.size(), s.size());
  for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(ids[i], int32_t(static_cast<unsigned char>(s[i])));
  EXPECT_EQ(t.decode(ids), s);
  EXPECT_THROW(t.token_bytes(256), Error);
}

// ----------------------------------------------------- streaming UTF-8

TEST(TokenizerUtf8, HoldsBackSplitCharacterUntilCompleted) {
  Utf8StreamDecoder d;
  // 世 = E4 B8 96, 😀 = F0 9F 98 80
  EXPECT_EQ(d.feed("a\xe4"), "a");
  EXPECT_EQ(d.pending(), 1u);
  EXPECT_EQ(d.feed("\xb8"), "");
  EXPECT_EQ(d.feed("\x96z\xf0\x9f"), "\xe4\xb8\x96z");
  EXPECT_EQ(d.feed("\x98"), "");
  EXPECT_EQ(d.feed("\x80!"), "\xf0\x9f\x98\x80!");
  EXPECT_EQ(d.pending(), 0u);
  EXPECT_EQ(d.flush(), "");
}

TEST(TokenizerUtf8, FlushesInvalidBytes) {
  Utf8StreamDecoder d;
  EXPECT_EQ(d.feed("\xff\xfe"), "\xff\xfe");            // never valid
  EXPECT_EQ(d.feed("\x80x"), "\x80x");                  // stray continuation
  EXPECT_EQ(d.feed("\xe4"), "");                        // could still complete...
  EXPECT_EQ(d.feed("A"), "\xe4" "A");                   // ...but cannot any more
  EXPECT_EQ(d.feed("\xe0\x80"), "\xe0\x80");            // overlong 3-byte form
  EXPECT_EQ(d.feed("\xed\xa0"), "\xed\xa0");            // surrogate
  EXPECT_EQ(d.feed("\xf4\x90"), "\xf4\x90");            // past U+10FFFF
  EXPECT_EQ(d.feed("\xc0\xaf"), "\xc0\xaf");            // overlong 2-byte form
  EXPECT_EQ(d.feed("\xe4\xb8\xe4\xb8\x96"), "\xe4\xb8\xe4\xb8\x96");  // a cut character, then a whole one
  EXPECT_EQ(d.feed("\xf0\x9f\x98"), "");
  EXPECT_EQ(d.flush(), "\xf0\x9f\x98");  // end of stream: what is held comes out
  EXPECT_EQ(d.pending(), 0u);
}

TEST(TokenizerUtf8, StreamingWorldTokensReproducesText) {
  // Feeding the golden cases token by token gives back the bytes exactly,
  // and every piece except the flushed tail ends on a character boundary
  // when the text is valid UTF-8.
  for (const Golden& g : read_goldens()) {
    Utf8StreamDecoder d;
    std::string out;
    for (int32_t id : g.ids) {
      const std::string piece = d.feed(world().token_bytes(id));
      EXPECT_LE(d.pending(), 3u);
      out += piece;
    }
    out += d.flush();
    EXPECT_EQ(out, g.bytes) << g.name;
  }
  Utf8StreamDecoder d;
  std::string out;
  for (int32_t id : world().encode("👨‍👩‍👧 家族")) {
    const std::string piece = d.feed(world().token_bytes(id));
    for (size_t i = 0; i < piece.size();) {
      const int n = utf8_char_length(piece, i);
      ASSERT_GT(n, 0) << "a piece is not whole characters";
      i += size_t(n);
    }
    out += piece;
  }
  EXPECT_EQ(d.pending(), 0u);
  EXPECT_EQ(out, "👨‍👩‍👧 家族");
}

// ----------------------------------------------------- GPT-NeoX BPE
//
// tests/data/tokenizer/neox_goldens.jsonl (same format) holds the ids that the
// OFFICIAL Hugging Face `tokenizers` library (its Node binding, npm package
// `tokenizers` 0.23.2) gives for 20B_tokenizer.json, made by a script kept
// outside the repository, for the valid-UTF-8 cases of the World set plus
// contractions, special-token text, space runs around the added
// whitespace tokens, Unicode spaces, numbers, text that NFC changes, and
// seeded random text and code points.

const std::string kNeoxJson = test::shared_path("tokenizers/20B_tokenizer.json");

const BpeTokenizer& neox() {
  static const BpeTokenizer t = BpeTokenizer::load(kNeoxJson);
  return t;
}

std::string nfc_bytes(const std::string& s) { return code_points_to_utf8(nfc(utf8_to_code_points(s))); }

TEST(TokenizerNeox, VocabularyShape) {
  EXPECT_EQ(neox().name(), "neox");
  EXPECT_EQ(neox().vocab_size(), 50277);
  EXPECT_EQ(neox().token_bytes(0), "<|endoftext|>");
  EXPECT_EQ(neox().token_bytes(50276), "  ");
  EXPECT_EQ(neox().token_bytes(12092), "Hello");
  EXPECT_EQ(neox().token_bytes(1533), " world");
  EXPECT_THROW(neox().token_bytes(50277), Error);
}

TEST(TokenizerNeox, MatchesOfficialTokenizer) {
  const auto goldens = read_goldens("neox_goldens.jsonl");
  ASSERT_GE(goldens.size(), 150u);
  for (const Golden& g : goldens) {
    EXPECT_EQ(neox().encode(g.bytes), g.ids) << g.name;
    // Decoding gives the normalised text back, byte for byte.
    EXPECT_EQ(neox().decode(g.ids), nfc_bytes(g.bytes)) << g.name;
  }
}

TEST(TokenizerNeox, PreTokenizerFollowsGpt2Pattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(neox().pre_tokenize("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(neox().pre_tokenize("a   b"), (V{"a", "  ", " b"}));
  // A whitespace run gives its last character to the word that follows.
  EXPECT_EQ(neox().pre_tokenize("a \n b  "), (V{"a", " \n", " b", "  "}));
  EXPECT_EQ(neox().pre_tokenize("a\nb"), (V{"a", "\n", "b"}));
  EXPECT_EQ(neox().pre_tokenize("it's they're IT'S"), (V{"it", "'s", " they", "'re", " IT", "'", "S"}));
  EXPECT_EQ(neox().pre_tokenize("x=12.5!"), (V{"x", "=", "12", ".", "5", "!"}));
  EXPECT_EQ(neox().pre_tokenize("\xff\xfe" "ab"), (V{"\xff\xfe", "ab"}));  // invalid bytes: punctuation
}

TEST(TokenizerNeox, RoundTripsRandomText) {
  std::mt19937 rng(5);
  const std::vector<std::string> pool = {"a", "Z", " ", "  ", "\t", "\n", "\r\n", "'s", "é", "e\xcc\x81", "中", "😀",
                                         "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "<|endoftext|>", "7", ".", "\x80", "\xe4\xb8"};
  for (int i = 0; i < 300; ++i) {
    std::string s;
    for (size_t k = rng() % 80; k > 0; --k) s += pool[rng() % pool.size()];
    EXPECT_EQ(neox().decode(neox().encode(s)), nfc_bytes(s)) << "case " << i;
  }
}

TEST(TokenizerNeox, BytesOutsideTheVocabularyAreAnError) {
  // GPT-NeoX has no token for bytes that never occur in UTF-8.
  try {
    neox().encode("ok \xff");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("0xff"), std::string::npos) << e.what();
  }
}

TEST(TokenizerNeox, FactoryAndMismatch) {
  EXPECT_EQ(make_tokenizer("", 50277, kWorldModel)->name(), "neox");
  EXPECT_EQ(make_tokenizer(kNeoxJson, 50277)->encode("Hello"), std::vector<int32_t>{12092});
  try {
    make_tokenizer("neox", 256, kWorldModel);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("50277"), std::string::npos) << e.what();
  }
}

TEST(TokenizerNeox, RejectsBadTokenizerJson) {
  auto expect_error = [](const std::string& json, const std::string& needle) {
    try {
      BpeTokenizer::parse(json, "tok.json");
      ADD_FAILURE() << "no error for " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("tok.json"), std::string::npos) << e.what();
    }
  };
  const std::string byte_level = R"("pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"})";
  expect_error("{not json", "not valid JSON");
  expect_error("{}", "model");
  expect_error(R"({"model": {"type": "WordPiece"}})", "WordPiece");
  expect_error(R"({"model": {"type": "BPE", "merges": []}, )" + byte_level + "}", "vocab");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "NFKC"}, )" +
                   byte_level + "}",
               "NFKC");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}, )" + byte_level + "}",
               "merge 0");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}})",
               "Whitespace");
  try {
    BpeTokenizer::load("/nonexistent/tok.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tok.json"), std::string::npos) << e.what();
  }
}

// ----------------------------------------------------- CLI

std::string quote(const std::string& s) { return "'" + s + "'"; }

TEST(TokenizerCli, TokenizeIdsOnlyMatchesOfficialIds) {
  TempDir dir;
  for (const Golden& g : read_goldens()) {
    if (g.name != "emoji_zwj_family" && g.name != "crlf" && g.name != "invalid_in_text" && g.name != "empty" &&
        g.name != "lambada_0")
      continue;
    const std::string in = dir / "in.txt";
    test::write_bytes(in, std::vector<char>(g.bytes.begin(), g.bytes.end()));
    const auto r = run_cli("tokenize --vocab " + quote(kVocab) + " --ids-only < " + quote(in));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::string expected;
    for (size_t i = 0; i < g.ids.size(); ++i) {
      if (i > 0) expected += ' ';
      expected += std::to_string(g.ids[i]);
    }
    EXPECT_EQ(r.output, expected + "\n") << g.name;
  }
}

TEST(TokenizerCli, NeoxIdsOnlyMatchesOfficialIds) {
  TempDir dir;
  for (const Golden& g : read_goldens("neox_goldens.jsonl")) {
    if (g.name != "special_tokens" && g.name != "nfc_combining" && g.name != "spaces_49") continue;
    test::write_bytes(dir / "in.txt", std::vector<char>(g.bytes.begin(), g.bytes.end()));
    for (const std::string& sel : {"--tokenizer neox -m " + quote(kWorldModel), "--tokenizer " + quote(kNeoxJson)}) {
      // -m is only there to locate 20B_tokenizer.json; its 65536 ids fit neox's 50277.
      const auto r = run_cli("tokenize " + sel + " --ids-only < " + quote(dir / "in.txt"));
      ASSERT_EQ(r.exit_code, 0) << r.output;
      std::string expected;
      for (int32_t id : g.ids) expected += std::to_string(id) + " ";
      expected.back() = '\n';
      EXPECT_EQ(r.output, expected) << g.name;
    }
  }
}

TEST(TokenizerCli, TokenizeThenDetokenizeIsByteExact) {
  TempDir dir;
  std::mt19937 rng(99);
  std::string text = "Hello,\r\n世界\t👍🏽 \xff\xfe\xe4\xb8";
  text += random_bytes(rng, 3000);
  test::write_bytes(dir / "in.bin", std::vector<char>(text.begin(), text.end()));
  for (const std::string& sel : {"--vocab " + quote(kVocab), std::string("--tokenizer bytes"),
                                "-m " + quote(kWorldModel)}) {
    const auto r = run_cli("tokenize " + sel + " --ids-only < " + quote(dir / "in.bin") + " > " +
                           quote(dir / "ids.txt"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto back = run_cli("detokenize " + sel + " < " + quote(dir / "ids.txt") + " > " + quote(dir / "out.bin"));
    ASSERT_EQ(back.exit_code, 0) << back.output;
    const auto out = test::read_bytes(dir / "out.bin");
    EXPECT_EQ(std::string(out.begin(), out.end()), text) << sel;
  }
}

TEST(TokenizerCli, DetokenizeAcceptsCommasAndWhitespace) {
  const auto r = run_cli("detokenize --tokenizer bytes < /dev/null; printf '72, 105,\\n33\\t10' | " +
                         std::string(RWKV_CLI_PATH) + " detokenize --vocab " + quote(kVocab));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "Gh \t");  // World ids are byte + 1 for single bytes
}

TEST(TokenizerCli, TokenizePicksTokenizerFromModel) {
  const auto r = run_cli("tokenize -m " + quote(kTinyModel) + " --ids-only < /dev/null; printf 'hi' | " +
                         std::string(RWKV_CLI_PATH) + " tokenize -m " + quote(kTinyModel) + " --ids-only");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "\n104 105\n");
  const auto w = run_cli("tokenize -m " + quote(kWorldModel) + " --ids-only < /dev/null; printf 'Hello' | " +
                         std::string(RWKV_CLI_PATH) + " tokenize -m " + quote(kWorldModel));
  EXPECT_EQ(w.exit_code, 0) << w.output;
  EXPECT_EQ(w.output, "\n33155\t\"Hello\"\n");
}

// Runs `args` with `input` on stdin and expects exit 1 with `needle`.
void expect_cli_error(const std::string& input, const std::string& args, const std::string& needle) {
  const auto r = run_cli(args + " < " + quote(input));
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
  EXPECT_NE(r.output.find("error:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.output;
}

TEST(TokenizerCli, BadInputIsAClearError) {
  TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) {
    test::write_bytes(dir / name, std::vector<char>(text.begin(), text.end()));
    return dir / name;
  };
  const std::string v = " --vocab " + quote(kVocab);
  expect_cli_error(write("big.txt", "1 2 65530"), "detokenize" + v, "65530");
  expect_cli_error(write("huge.txt", "99999999999"), "detokenize" + v, "out of range");
  expect_cli_error(write("neg.txt", "1 -2"), "detokenize" + v, "'-2' is not a token id");
  expect_cli_error(write("word.txt", "1 two"), "detokenize" + v, "'two' is not a token id");
  expect_cli_error(write("bytes.txt", "256"), "detokenize --tokenizer bytes", "256");
  expect_cli_error(write("hi.txt", "hi"), "tokenize --vocab /nonexistent/v.txt", "/nonexistent/v.txt");
  expect_cli_error(dir / "hi.txt", "tokenize --tokenizer world -m " + quote(kTinyModel), "256");
  expect_cli_error(dir / "hi.txt", "tokenize" + v + " -m " + quote(kTinyModel), "65530");
  expect_cli_error(write("bad_vocab.txt", "1 'a' 1\n2 'b' 3\n"), "tokenize --vocab " + quote(dir / "bad_vocab.txt"),
                   "line 2");
  // Nothing on stdout from a failed detokenize (ids are all checked first).
  const std::string command = std::string(RWKV_CLI_PATH) + " detokenize" + v + " < " + quote(dir / "big.txt") +
                              " > " + quote(dir / "out.bin") + " 2> " + quote(dir / "err.txt");
  const int status = std::system(command.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_TRUE(test::read_bytes(dir / "out.bin").empty());
}

}  // namespace
}  // namespace rwkv

namespace rwkv {
namespace {

// A GGUF model carries its vocabulary: with no vocabulary file anywhere the
// lookup would reach, the tokenizer comes from the file's metadata and equals
// the official one.
TEST(TokenizerCli, GgufModelsUseTheirOwnVocabulary) {
  test::TempDir top;
  // One level down, so that the lookup's ../shared/tokenizers (relative to
  // the working directory) cannot reach a `shared` folder beside the system's
  // temporary directory (as when the project is cloned into /tmp).
  const std::string dir = top / "work";
  std::filesystem::create_directory(dir);
  const std::string gguf = dir + "/model.gguf";
  std::filesystem::create_symlink(test::shared_path("models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.gguf"), gguf);
  const std::string text = "Hello, world! 你好 \xf0\x9f\x98\x80";
  test::write_bytes(dir + "/in.txt", std::vector<char>(text.begin(), text.end()));
  const std::string in_dir = "cd '" + dir + "' && RWKV_TOKENIZER_DIR=. ";
  const std::string command = in_dir + std::string(RWKV_CLI_PATH) + " tokenize -m model.gguf --ids-only < in.txt 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  EXPECT_EQ(::pclose(pipe), 0) << out;
  std::string expected;
  for (int32_t id : WorldTokenizer::load(kVocab).encode(text)) {
    if (!expected.empty()) expected += ' ';
    expected += std::to_string(id);
  }
  EXPECT_EQ(out, expected + "\n");
  // The same model as a .pth has no vocabulary inside: from that folder it is not found.
  std::filesystem::create_symlink(test::shared_path("models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.pth"),
                                  dir + "/model.pth");
  const std::string pth_command = in_dir + std::string(RWKV_CLI_PATH) + " tokenize -m model.pth --ids-only < in.txt 2>&1";
  pipe = ::popen(pth_command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  out.clear();
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  EXPECT_NE(::pclose(pipe), 0) << out;
  EXPECT_NE(out.find("cannot find the tokenizer file"), std::string::npos) << out;
}

}  // namespace
}  // namespace rwkv
