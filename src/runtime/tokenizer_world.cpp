#include "runtime/tokenizer_world.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "core/error.h"
#include "core/mapped_file.h"

namespace rwkv {
namespace {

// Ids beyond this are refused: a vocabulary is a table indexed by id, and a
// typo in an id must not turn into a multi-gigabyte allocation.
constexpr int64_t kMaxId = (int64_t(1) << 24) - 1;
// Trie nodes are packed with the edge byte into a 32-bit key.
constexpr size_t kMaxNodes = size_t(1) << 24;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// Reads exactly `digits` hex digits at body[i..]; fails naming the escape.
uint32_t read_hex(std::string_view body, size_t i, int digits, char escape) {
  if (body.size() - i < size_t(digits))
    fail("truncated \\{} escape (expected {} hex digits)", escape, digits);
  uint32_t value = 0;
  for (int k = 0; k < digits; ++k) {
    const int h = hex_value(body[i + size_t(k)]);
    if (h < 0) fail("bad \\{} escape (expected {} hex digits)", escape, digits);
    value = value * 16 + uint32_t(h);
  }
  return value;
}

// Parses a decimal field of the vocabulary line; plain digits only.
int64_t parse_count(std::string_view s, const char* what, const std::string& where) {
  if (s.empty() || s.size() > 12 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    fail("{}: {} '{}' is not a non-negative integer", where, what, s);
  int64_t v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string parse_python_literal(std::string_view literal) {
  std::string_view s = literal;
  bool is_bytes = false;
  if (!s.empty() && (s.front() == 'b' || s.front() == 'B')) {
    is_bytes = true;
    s.remove_prefix(1);
  } else if (!s.empty() && (s.front() == 'u' || s.front() == 'U')) {
    s.remove_prefix(1);
  }
  if (s.size() < 2 || (s.front() != '\'' && s.front() != '"') || s.back() != s.front())
    fail("expected a quoted Python str or bytes literal, got {}", literal);
  const char quote = s.front();
  const std::string_view body = s.substr(1, s.size() - 2);

  std::string out;
  out.reserve(body.size());
  size_t i = 0;
  while (i < body.size()) {
    const char c = body[i];
    if (c == quote) fail("unescaped {} inside the literal", quote);
    if (c != '\\') {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x80) {
        out += c;
        ++i;
        continue;
      }
      // Python reads the file as UTF-8 and only allows ASCII in bytes literals.
      if (is_bytes) fail("non-ASCII character in a bytes literal");
      const int n = utf8_char_length(body, i);
      if (n <= 0) fail("invalid UTF-8 at byte {} of the literal", i + 1);
      out.append(body.substr(i, size_t(n)));
      i += size_t(n);
      continue;
    }
    if (i + 1 >= body.size()) fail("the literal ends with a lone backslash");
    const char e = body[i + 1];
    i += 2;
    switch (e) {
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': {
        const uint32_t v = read_hex(body, i, 2, 'x');
        i += 2;
        // In a str, \xhh is the code point U+00hh (two UTF-8 bytes from 0x80).
        if (is_bytes) out += char(v); else append_utf8(out, v);
        break;
      }
      case 'u':
      case 'U': {
        if (is_bytes) fail("\\{} is not an escape in a bytes literal", e);
        const int digits = e == 'u' ? 4 : 8;
        const uint32_t v = read_hex(body, i, digits, e);
        i += size_t(digits);
        if (v > 0x10FFFF) fail("\\{} escape out of range (U+{:X})", e, v);
        if (v >= 0xD800 && v <= 0xDFFF) fail("surrogate U+{:X} cannot be encoded as UTF-8", v);
        append_utf8(out, v);
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = uint32_t(e - '0');
          for (int k = 0; k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k, ++i)
            v = v * 8 + uint32_t(body[i] - '0');
          if (is_bytes) {
            if (v > 0xFF) fail("octal escape out of range for bytes (\\{:o})", v);
            out += char(v);
          } else {
            append_utf8(out, v);
          }
          break;
        }
        // Python keeps unknown escapes verbatim (with a warning); a vocabulary
        // file has no reason to contain one, so it is more likely damage.
        fail("unsupported escape \\{}", e);
    }
  }
  return out;
}

WorldTokenizer WorldTokenizer::load(const std::string& path) {
  std::shared_ptr<const MappedFile> file;
  try {
    file = MappedFile::open(path);
  } catch (const Error& e) {
    fail("cannot read vocabulary file: {}", e.what());
  }
  const auto bytes = file->bytes();
  WorldTokenizer t = parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
  if (std::filesystem::path(path).filename() != kWorldVocabFile) t.name_ = "vocab " + path;
  return t;
}

WorldTokenizer WorldTokenizer::parse(std::string_view text, const std::string& source) {
  WorldTokenizer t;
  std::vector<size_t> lines;  // by id: the line that defined it (0: none)
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    const size_t nl = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where = fmt::format("{}: line {}", source, line_no);
    // Python's universal newlines would split a line at a bare CR.
    if (line.find('\r') != std::string_view::npos) fail("{}: stray carriage return", where);

    const size_t first = line.find(' ');
    const size_t last = line.rfind(' ');
    if (first == std::string_view::npos || first == last)
      fail("{}: expected '<id> <literal> <byte length>'", where);
    const int64_t id = parse_count(line.substr(0, first), "id", where);
    const int64_t length = parse_count(line.substr(last + 1), "byte length", where);
    const std::string_view literal = trim(line.substr(first + 1, last - first - 1));
    std::string token;
    try {
      token = parse_python_literal(literal);
    } catch (const Error& e) {
      fail("{}: {}", where, e.what());
    }
    if (int64_t(token.size()) != length)
      fail("{}: the token is {} bytes long but the line says {}", where, token.size(), length);
    if (token.empty()) fail("{}: empty token", where);
    if (id > kMaxId) fail("{}: id {} is too large (at most {})", where, id, kMaxId);
    if (size_t(id) >= t.tokens_.size()) {
      t.tokens_.resize(size_t(id) + 1);
      lines.resize(size_t(id) + 1, 0);
    }
    if (lines[size_t(id)] != 0) fail("{}: id {} was already defined on line {}", where, id, lines[size_t(id)]);
    t.tokens_[size_t(id)] = std::move(token);
    lines[size_t(id)] = line_no;
    ++t.token_count_;
  }
  if (t.token_count_ == 0) fail("{}: no tokens in the vocabulary file", source);
  t.build_trie(lines, source);
  return t;
}

void WorldTokenizer::build_trie(const std::vector<size_t>& lines, const std::string& source) {
  std::fill(std::begin(root_child_), std::end(root_child_), -1);
  node_token_.assign(1, -1);
  std::unordered_map<uint32_t, int32_t> edges;  // (node << 8 | byte) -> child
  edges.reserve(token_count_ * 2);
  for (size_t id = 0; id < tokens_.size(); ++id) {
    const std::string& token = tokens_[id];
    int32_t node = 0;
    for (size_t k = 0; k < token.size(); ++k) {
      const auto byte = static_cast<uint8_t>(token[k]);
      int32_t* slot;
      if (node == 0) {
        slot = &root_child_[byte];
      } else {
        slot = &edges.try_emplace((uint32_t(node) << 8) | byte, -1).first->second;
      }
      if (*slot < 0) {
        if (node_token_.size() >= kMaxNodes) fail("{}: vocabulary too large", source);
        *slot = int32_t(node_token_.size());
        node_token_.push_back(-1);
      }
      node = *slot;
    }
    if (node == 0) continue;  // no token at this id
    if (node_token_[size_t(node)] >= 0) {
      const auto other = size_t(node_token_[size_t(node)]);
      fail("{}: line {}: the token of id {} repeats that of id {} (line {})", source, lines[id], id, other,
           lines[other]);
    }
    node_token_[size_t(node)] = int32_t(id);
  }

  depth2_.assign(65536, -1);
  for (uint32_t a = 0; a < 256; ++a) {
    if (root_child_[a] < 0) continue;
    for (uint32_t b = 0; b < 256; ++b)
      if (const auto it = edges.find((uint32_t(root_child_[a]) << 8) | b); it != edges.end())
        depth2_[a << 8 | b] = it->second;
  }

  // Pack the edges into a table at most half full, so probes stay short.
  const size_t capacity = std::bit_ceil(std::max<size_t>(16, edges.size() * 2));
  edges_.assign(capacity, 0);
  edge_mask_ = capacity - 1;
  edge_shift_ = 64 - std::countr_zero(capacity);
  for (const auto& [key, child] : edges) {
    uint64_t h = (uint64_t(key) * 0x9E3779B97F4A7C15ull) >> edge_shift_;
    while (edges_[h] != 0) h = (h + 1) & edge_mask_;
    edges_[h] = (uint64_t(key + 1) << 32) | uint32_t(child);
  }
}

inline int32_t WorldTokenizer::child(int32_t node, uint8_t byte) const {
  const uint32_t key = (uint32_t(node) << 8) | byte;
  const uint64_t tag = uint64_t(key + 1) << 32;
  uint64_t h = (uint64_t(key) * 0x9E3779B97F4A7C15ull) >> edge_shift_;
  for (;;) {
    const uint64_t e = edges_[h];
    if (e == 0) return -1;
    if ((e & 0xFFFFFFFF00000000ull) == tag) return int32_t(uint32_t(e));
    h = (h + 1) & edge_mask_;
  }
}

// Greedy longest match: at each position take the longest token that the
// remaining bytes start with. This is what the official tokenizers compute
// (RWKV_TOKENIZER tries a first-two-bytes bucket longest first;
// TRIE_TOKENIZER walks a trie); here one trie walk per token.
std::vector<int32_t> WorldTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t pos = 0;
  while (pos < n) {
    int32_t node = root_child_[s[pos]];
    int32_t best = -1;
    size_t best_end = pos;
    size_t j = pos + 1;
    if (node >= 0 && j < n) {
      // One byte deep, then straight to two bytes deep through depth2_.
      if (const int32_t id = node_token_[size_t(node)]; id >= 0) {
        best = id;
        best_end = j;
      }
      node = depth2_[size_t(s[pos]) << 8 | s[j]];
      ++j;
    }
    while (node >= 0) {
      const int32_t id = node_token_[size_t(node)];
      if (id >= 0) {
        best = id;
        best_end = j;
      }
      if (j == n) break;
      node = child(node, s[j]);
      ++j;
    }
    if (best < 0) fail("{}: no token for byte 0x{:02x} at offset {}", name_, s[pos], pos);
    ids.push_back(best);
    pos = best_end;
  }
  return ids;
}

std::string_view WorldTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || size_t(id) >= tokens_.size())
    fail("token id {} is out of range for the {} tokenizer (ids 0 to {})", id, name_, tokens_.size() - 1);
  return tokens_[size_t(id)];
}

}  // namespace rwkv
