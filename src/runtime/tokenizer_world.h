// The RWKV World tokenizer: greedy longest match over bytes against a fixed
// vocabulary, the algorithm of the official RWKV_TOKENIZER / TRIE_TOKENIZER.
//
// Vocabulary file format (rwkv_vocab_v20230424.txt), one token per line:
//   <id> <Python str or bytes literal> <length of the token in bytes>
// A str literal stands for the UTF-8 encoding of its text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer.h"

namespace rwkv {

class WorldTokenizer final : public Tokenizer {
 public:
  // Reads and checks a vocabulary file; throws rwkv::Error naming the file
  // and line of the first problem.
  static WorldTokenizer load(const std::string& path);
  // Parses vocabulary text; `source` names it in error messages.
  static WorldTokenizer parse(std::string_view text, const std::string& source);

  std::string name() const override { return name_; }
  int32_t vocab_size() const override { return int32_t(tokens_.size()); }
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string_view token_bytes(int32_t id) const override;

  // Ids that the file defines (World: 65529, ids 1..65529).
  size_t token_count() const { return token_count_; }

 private:
  WorldTokenizer() = default;
  // Builds the trie from tokens_; `lines` gives each id's line for messages.
  void build_trie(const std::vector<size_t>& lines, const std::string& source);
  int32_t child(int32_t node, uint8_t byte) const;

  std::string name_ = "world";
  std::vector<std::string> tokens_;  // by id; empty for ids the file leaves out
  size_t token_count_ = 0;

  // Trie over token bytes. Node 0 is the root; node_token_[n] is the id whose
  // bytes spell the path to n, or -1. Edges live in one open-addressing hash
  // table keyed by (node << 8 | byte): a dense 256-wide table per node would
  // take ~120 MB for World's 116k nodes, and sorted child lists cost a
  // search per byte. The first two levels are plain arrays since every token
  // starts there.
  std::vector<int32_t> node_token_;
  int32_t root_child_[256];
  // Nodes two bytes deep, indexed by (first byte << 8 | second byte): most
  // tokens are short, and this saves a hash probe on each (-1: none).
  std::vector<int32_t> depth2_;
  std::vector<uint64_t> edges_;  // ((key + 1) << 32 | child), 0 = empty slot
  uint64_t edge_mask_ = 0;       // edges_.size() - 1 (a power of two)
  int edge_shift_ = 64;          // 64 - log2(edges_.size()), for the hash
};

// Parses one Python string or bytes literal (`'..'`, `".."`, `b'..'`, `u'..'`)
// into the bytes it stands for (str: UTF-8). Supports the escapes Python
// does except \N{...}; throws rwkv::Error describing the problem (no location:
// callers add it). Exposed for tests.
std::string parse_python_literal(std::string_view literal);

}  // namespace rwkv
