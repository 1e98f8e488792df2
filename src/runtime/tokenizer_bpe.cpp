#include "runtime/tokenizer_bpe.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <queue>

#include "core/error.h"
#include "core/mapped_file.h"
#include "runtime/tokenizer_unicode.h"

namespace rwkv {
namespace {

using Json = nlohmann::json;

// GPT-2's byte-level alphabet: printable bytes stand for themselves, the
// rest are moved to U+0100 upwards, so every token is printable text.
// Returns, for each code point below 0x144, the byte it stands for or -1.
std::vector<int> byte_level_decoder() {
  std::vector<int> byte_of(0x144, -1);
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_of[size_t(printable ? b : 256 + next++)] = b;
  }
  return byte_of;
}

std::string byte_level_to_bytes(const std::string& token, const std::vector<int>& byte_of, const std::string& where) {
  std::string out;
  for (char32_t cp : utf8_to_code_points(token)) {
    if (cp >= byte_of.size() || byte_of[cp] < 0)
      fail("{}: token '{}' has a character outside the byte-level alphabet", where, token);
    out += char(byte_of[cp]);
  }
  return out;
}

const Json& member(const Json& object, const char* key, const std::string& source) {
  if (!object.is_object() || !object.contains(key)) fail("{}: missing \"{}\"", source, key);
  return object.at(key);
}

// The "type" of an optional component, or "" when it is null.
std::string type_of(const Json& root, const char* key, const std::string& source) {
  if (!root.contains(key) || root.at(key).is_null()) return "";
  const Json& c = root.at(key);
  if (!c.is_object() || !c.contains("type") || !c.at("type").is_string())
    fail("{}: \"{}\" has no \"type\"", source, key);
  return c.at("type").get<std::string>();
}

void check_byte_level(const Json& root, const char* key, const std::string& source) {
  const std::string type = type_of(root, key, source);
  if (type != "ByteLevel") fail("{}: unsupported {} '{}' (only ByteLevel is supported)", source, key, type);
  const Json& c = root.at(key);
  if (c.value("add_prefix_space", false)) fail("{}: {} with add_prefix_space is not supported", source, key);
  if (!c.value("use_regex", true)) fail("{}: {} without use_regex is not supported", source, key);
}

enum class CharClass { Space, Letter, Number, Other };

CharClass char_class(char32_t c) {
  if (is_white_space(c)) return CharClass::Space;
  if (is_letter(c)) return CharClass::Letter;
  if (is_number(c)) return CharClass::Number;
  return CharClass::Other;
}

// The GPT-2 pattern, as matches of Oniguruma (which the official library
// uses) would split the text:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Every character matches some alternative, so the pieces tile the text;
// this returns the end of the piece starting at `i`.
size_t gpt2_piece_end(std::u32string_view s, size_t i) {
  const size_t n = s.size();
  if (s[i] == '\'' && i + 1 < n) {
    const char32_t a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      const char32_t b = s[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }
  // ` ?X+` for X = letters, numbers, other: an optional U+0020, then a run.
  size_t j = i;
  if (s[i] == ' ' && i + 1 < n && char_class(s[i + 1]) != CharClass::Space) j = i + 1;
  const CharClass c = char_class(s[j]);
  if (c != CharClass::Space) {
    while (j < n && char_class(s[j]) == c) ++j;
    return j;
  }
  // Whitespace: `\s+(?!\S)` gives the run but its last character when
  // something else follows (that character joins the next piece as its
  // optional space), unless the run is a single character: then `\s+`.
  while (j < n && char_class(s[j]) == CharClass::Space) ++j;
  if (j == n || j - i == 1) return j;
  return j - 1;
}

}  // namespace

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  std::shared_ptr<const MappedFile> file;
  try {
    file = MappedFile::open(path);
  } catch (const Error& e) {
    fail("cannot read tokenizer file: {}", e.what());
  }
  const auto bytes = file->bytes();
  BpeTokenizer t = parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
  if (std::filesystem::path(path).filename() != kNeoxTokenizerFile) t.name_ = "bpe " + path;
  return t;
}

BpeTokenizer BpeTokenizer::parse(std::string_view text, const std::string& source) {
  Json root;
  try {
    root = Json::parse(text);
  } catch (const Json::exception& e) {
    fail("{}: not valid JSON: {}", source, e.what());
  }
  BpeTokenizer t;
  try {
    const Json& model = member(root, "model", source);
    if (model.value("type", std::string()) != "BPE")
      fail("{}: model type '{}' is not supported (only BPE)", source, model.value("type", std::string()));
    for (const char* key : {"dropout", "continuing_subword_prefix", "end_of_word_suffix"})
      if (model.contains(key) && !model.at(key).is_null()) fail("{}: BPE option \"{}\" is not supported", source, key);
    const std::string normalizer = type_of(root, "normalizer", source);
    if (normalizer != "" && normalizer != "NFC")
      fail("{}: normalizer '{}' is not supported (only NFC or none)", source, normalizer);
    t.nfc_ = normalizer == "NFC";
    check_byte_level(root, "pre_tokenizer", source);
    check_byte_level(root, "decoder", source);

    const std::vector<int> byte_of = byte_level_decoder();
    std::unordered_map<std::string, int32_t> ids;  // token bytes -> id
    const Json& vocab = member(model, "vocab", source);
    if (!vocab.is_object()) fail("{}: \"vocab\" is not an object", source);
    for (const auto& [token, id_json] : vocab.items()) {
      if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 || id_json.get<int64_t>() > (1 << 24))
        fail("{}: vocab entry '{}' has a bad id", source, token);
      const auto id = id_json.get<int32_t>();
      std::string bytes = byte_level_to_bytes(token, byte_of, source);
      if (size_t(id) >= t.tokens_.size()) t.tokens_.resize(size_t(id) + 1);
      if (!t.tokens_[size_t(id)].empty()) fail("{}: id {} appears twice in the vocab", source, id);
      if (bytes.empty()) fail("{}: empty token for id {}", source, id);
      t.tokens_[size_t(id)] = bytes;
      ids.emplace(std::move(bytes), id);
    }
    for (int b = 0; b < 256; ++b) {
      // GPT-NeoX's vocabulary lacks the bytes that never occur in UTF-8
      // (C0, C1, F5..FF); encode refuses them.
      const auto it = ids.find(std::string(1, char(b)));
      t.byte_token_[b] = it == ids.end() ? -1 : it->second;
    }

    const Json& merges = member(model, "merges", source);
    if (!merges.is_array()) fail("{}: \"merges\" is not an array", source);
    t.merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const Json& m = merges[rank];
      std::string left, right;
      if (m.is_string()) {  // older files: "left right"
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          fail("{}: merge {} '{}' is not two tokens", source, rank, s);
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      } else {
        fail("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", source, rank);
      }
      const std::string a = byte_level_to_bytes(left, byte_of, source);
      const std::string b = byte_level_to_bytes(right, byte_of, source);
      const auto ia = ids.find(a), ib = ids.find(b), iab = ids.find(a + b);
      if (ia == ids.end() || ib == ids.end() || iab == ids.end())
        fail("{}: merge {} ('{}' '{}') uses a token that is not in the vocab", source, rank, left, right);
      // A pair listed twice keeps its first (best) rank.
      t.merges_.try_emplace((uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second),
                            Merge{int32_t(rank), iab->second});
    }

    if (root.contains("added_tokens") && !root.at("added_tokens").is_null()) {
      for (const Json& a : root.at("added_tokens")) {
        const auto id = member(a, "id", source).get<int64_t>();
        const auto content = member(a, "content", source).get<std::string>();
        if (id < 0 || id > (1 << 24)) fail("{}: added token '{}' has a bad id", source, content);
        if (content.empty()) fail("{}: added token {} is empty", source, id);
        if (a.value("single_word", false) || a.value("lstrip", false) || a.value("rstrip", false))
          fail("{}: added token '{}': single_word/lstrip/rstrip are not supported", source, content);
        if (size_t(id) >= t.tokens_.size()) t.tokens_.resize(size_t(id) + 1);
        if (!t.tokens_[size_t(id)].empty() && t.tokens_[size_t(id)] != content)
          fail("{}: added token {} '{}' differs from the vocab's", source, id, content);
        t.tokens_[size_t(id)] = content;
        // Normalised added tokens are matched in normalised text, so they
        // are normalised too (as the official library does).
        if (a.value("normalized", !a.value("special", false))) {
          t.added_normalized_.push_back(
              {t.nfc_ ? code_points_to_utf8(nfc(utf8_to_code_points(content))) : content, int32_t(id)});
        } else {
          t.added_raw_.push_back({content, int32_t(id)});
        }
      }
    }
  } catch (const Json::exception& e) {
    fail("{}: unexpected JSON structure: {}", source, e.what());
  }
  return t;
}

template <typename Piece>
void BpeTokenizer::split_added(std::string_view text, const std::vector<AddedToken>& added, std::vector<int32_t>& ids,
                               Piece&& piece) const {
  if (added.empty()) {
    if (!text.empty()) piece(text);
    return;
  }
  bool starts[256] = {};  // first bytes of added tokens: skip other positions fast
  for (const AddedToken& a : added) starts[static_cast<unsigned char>(a.content[0])] = true;
  size_t start = 0;  // of the text not yet handed out
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    if (starts[static_cast<unsigned char>(text[i])])
      for (const AddedToken& a : added)
        if ((best == nullptr || a.content.size() > best->content.size()) && text.substr(i).starts_with(a.content))
          best = &a;
    if (best == nullptr) {
      ++i;
      continue;
    }
    if (i > start) piece(text.substr(start, i - start));
    ids.push_back(best->id);
    i += best->content.size();
    start = i;
  }
  if (start < text.size()) piece(text.substr(start));
}

namespace {

// Calls `word(piece)` for each GPT-2 pre-token of `text`, as views into it.
template <typename Word>
void for_each_pre_token(std::string_view text, Word&& word) {
  const std::u32string cps = utf8_to_code_points(text);
  // Byte offset of each code point (an invalid byte counts as one).
  std::vector<uint32_t> offsets(cps.size() + 1);
  uint32_t at = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    offsets[i] = at;
    const char32_t c = cps[i];
    at += c < 0x80 || c >= kInvalidByteBase ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  offsets[cps.size()] = at;
  for (size_t i = 0; i < cps.size();) {
    const size_t end = gpt2_piece_end(cps, i);
    word(text.substr(offsets[i], offsets[end] - offsets[i]));
    i = end;
  }
}

// NFC of UTF-8 text; text without a byte >= 0xCC has no code point from
// U+0300 up, so it is already NFC (see nfc()) and is returned as it is.
std::string nfc_utf8(std::string_view text) {
  if (std::none_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0xCC; }))
    return std::string(text);
  return code_points_to_utf8(nfc(utf8_to_code_points(text)));
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

}  // namespace

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string> pieces;
  for_each_pre_token(text, [&](std::string_view word) { pieces.emplace_back(word); });
  return pieces;
}

// BPE on one pre-token, the way the official library does it: repeatedly
// merge the adjacent pair of lowest rank (leftmost first on ties).
void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, result;
    bool operator<(const Candidate& o) const {  // "lower priority than"
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto n = int32_t(word.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    const auto byte = static_cast<unsigned char>(word[size_t(i)]);
    if (byte_token_[byte] < 0) fail("the {} tokenizer has no token for byte 0x{:02x}", name_, byte);
    sym[size_t(i)] = {byte_token_[byte], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  auto find = [&](int32_t a, int32_t b) -> const Merge* {
    const auto it = merges_.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Candidate> queue;
  auto offer = [&](int32_t pos) {
    const int32_t next = sym[size_t(pos)].next;
    if (next < 0) return;
    if (const Merge* m = find(sym[size_t(pos)].id, sym[size_t(next)].id)) queue.push({m->rank, pos, m->result});
  };
  for (int32_t i = 0; i + 1 < n; ++i) offer(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = sym[size_t(c.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[size_t(left.next)];
    // Stale if either side has changed since the candidate was queued.
    const Merge* m = find(left.id, right.id);
    if (m == nullptr || m->result != c.result) continue;
    left.id = c.result;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) sym[size_t(left.next)].prev = c.pos;
    if (left.prev >= 0) offer(left.prev);
    offer(c.pos);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = sym[size_t(i)].next) ids.push_back(sym[size_t(i)].id);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  // Words repeat a lot in text, and BPE on a word is the expensive part: a
  // cache per call (not per tokenizer, which threads may share) of each
  // word's ids as a range of `cached`.
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> cache;
  std::vector<int32_t> cached;
  auto encode_cached = [&](std::string_view word) {
    if (const auto it = cache.find(word); it != cache.end()) {
      ids.insert(ids.end(), cached.begin() + it->second.first, cached.begin() + it->second.second);
      return;
    }
    const size_t start = ids.size();
    encode_word(word, ids);
    if (cache.size() < 100000) {
      cache.emplace(word, std::pair(uint32_t(cached.size()), uint32_t(cached.size() + ids.size() - start)));
      cached.insert(cached.end(), ids.begin() + std::ptrdiff_t(start), ids.end());
    }
  };
  split_added(text, added_raw_, ids, [&](std::string_view raw) {
    const std::string normalized = nfc_ ? nfc_utf8(raw) : std::string(raw);
    split_added(normalized, added_normalized_, ids,
                [&](std::string_view piece) { for_each_pre_token(piece, encode_cached); });
  });
  return ids;
}

std::string_view BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || size_t(id) >= tokens_.size())
    fail("token id {} is out of range for the {} tokenizer (ids 0 to {})", id, name_, tokens_.size() - 1);
  return tokens_[size_t(id)];
}

}  // namespace rwkv
