// Byte-level BPE from a Hugging Face tokenizer.json, in the configuration of
// GPT-NeoX's 20B_tokenizer.json (the tokenizer of the RWKV-4 "Pile" models):
// added tokens split off first (leftmost-longest), NFC normalisation, the
// GPT-2 pre-tokenizer regex, byte-level BPE by merge rank. Ids equal the
// official `tokenizers` library's for valid UTF-8 input.
//
// Where this goes beyond the official library: input that is not valid UTF-8
// is accepted (each invalid byte is treated as a punctuation character and
// left alone by NFC) as long as the vocabulary has a token for that byte
// (GPT-NeoX's lacks C0, C1 and F5..FF: encode fails on those), and decoding
// is byte-exact (no U+FFFD replacement; special tokens decode to their text,
// so encode -> decode round-trips any encodable input that is in NFC).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer.h"

namespace rwkv {

inline constexpr const char* kNeoxTokenizerFile = "20B_tokenizer.json";

class BpeTokenizer final : public Tokenizer {
 public:
  // Reads a tokenizer.json; fails, naming the file, for anything malformed or
  // for a configuration other than the one described above.
  static BpeTokenizer load(const std::string& path);
  static BpeTokenizer parse(std::string_view json, const std::string& source);

  std::string name() const override { return name_; }
  int32_t vocab_size() const override { return int32_t(tokens_.size()); }
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string_view token_bytes(int32_t id) const override;

  // The GPT-2 pre-tokenizer split of `text` (exposed for tests).
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
  };
  struct Merge {
    int32_t rank;
    int32_t result;
  };

  BpeTokenizer() = default;
  // Splits `text` at matches of `added` (leftmost, then longest), calling
  // `piece(text)` for the text between matches and appending matched ids.
  template <typename Piece>
  void split_added(std::string_view text, const std::vector<AddedToken>& added, std::vector<int32_t>& ids,
                   Piece&& piece) const;
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

  std::string name_ = "neox";
  bool nfc_ = false;
  std::vector<std::string> tokens_;  // by id: the bytes; empty if unused
  int32_t byte_token_[256];          // the id of each single byte, or -1
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id)
  std::vector<AddedToken> added_raw_;         // matched before normalisation
  std::vector<AddedToken> added_normalized_;  // matched after it
};

}  // namespace rwkv
