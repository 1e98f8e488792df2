// Tokenizers: text (as bytes) to token ids and back, exactly as the official
// RWKV code does it.
//
// Text is bytes throughout, never assumed to be valid UTF-8: a model sees byte
// sequences, and a tokenizer must round-trip any of them byte-exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rwkv {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // A short name for messages: "world", "bytes", ...
  virtual std::string name() const = 0;
  // Ids are in [0, vocab_size()). Some ids in that range may have no bytes
  // (World's id 0, end of text): they decode to nothing.
  virtual int32_t vocab_size() const = 0;

  // Splits `text` into token ids. Throws rwkv::Error only if the vocabulary
  // cannot express some byte (never for World or bytes, which hold all 256;
  // GPT-NeoX lacks the bytes that never occur in UTF-8).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // The bytes of one id; fails for ids outside [0, vocab_size()).
  virtual std::string_view token_bytes(int32_t id) const = 0;

  // The concatenated bytes of `ids`; fails naming the first id out of range.
  std::string decode(std::span<const int32_t> ids) const;
  void decode_append(std::span<const int32_t> ids, std::string& out) const;
};

// id = byte value, 256 ids: the vocabulary of rwkv.cpp's tiny test models.
class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "bytes"; }
  int32_t vocab_size() const override { return 256; }
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string_view token_bytes(int32_t id) const override;
};

// File name of the RWKV World vocabulary (65529 tokens, ids 1..65529; models
// have 65536 logits).
inline constexpr const char* kWorldVocabFile = "rwkv_vocab_v20230424.txt";

// Finds the World vocabulary file, looking in order in:
//   $RWKV_TOKENIZER_DIR;
//   beside the model (if `model_path` is given), then in `tokenizers/`,
//   `../tokenizers/` and `../../tokenizers/` relative to the model's folder
//   (the layout of shared/models/<set>/<file> next to shared/tokenizers/);
//   `tokenizers/` and `../shared/tokenizers/` relative to the current
//   directory (running from a checkout beside shared/).
// Fails listing every place it looked.
std::string find_world_vocab(const std::string& model_path = "");
// The same search for any tokenizer file name.
std::string find_tokenizer_file(const std::string& file_name, const std::string& model_path = "");

// Makes the tokenizer that `spec` names:
//   "world"  the RWKV World tokenizer (vocabulary found by find_world_vocab);
//   "neox"   GPT-NeoX's BPE (20B_tokenizer.json, found the same way);
//   "bytes"  ByteTokenizer;
//   other    a path: a Hugging Face tokenizer.json if it ends in .json
//            (BpeTokenizer), else a vocabulary file in the World format.
// With an empty spec the model's vocabulary size decides: 65536 -> world,
// 50277 -> neox, 256 -> bytes; n_vocab <= 0 means "no model" and picks world.
// With n_vocab > 0, fails if the tokenizer has ids the model cannot take
// (vocab_size() > n_vocab), naming both sizes.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec, int64_t n_vocab,
                                          const std::string& model_path = "");

// Turns a stream of token bytes into whole UTF-8 characters, for printing
// generated text as it comes: a character split across tokens is held back
// until the token that completes it arrives. Bytes that can no longer become
// valid UTF-8 (a stray continuation byte, a lead byte followed by a
// non-continuation, overlongs, surrogates, code points past U+10FFFF) are
// passed through as they are, never held, so output never stalls and the
// concatenated output always equals the concatenated input.
class Utf8StreamDecoder {
 public:
  // Returns the bytes that are ready: complete characters and invalid bytes.
  std::string feed(std::string_view bytes);
  // Returns whatever is still held (an incomplete sequence at end of stream)
  // and resets.
  std::string flush();
  // Bytes currently held back (0 to 3).
  size_t pending() const { return pending_.size(); }

 private:
  std::string pending_;
};

// How many bytes of `s`, starting at `pos`, form one valid UTF-8 character:
// 1-4 for a valid one, 0 if the bytes there cannot start a valid character,
// and -1 if they are a valid but incomplete prefix cut off by the end of `s`.
int utf8_char_length(std::string_view s, size_t pos);

}  // namespace rwkv
