#include "runtime/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "formats/open.h"
#include "model/layouts.h"
#include "runtime/tokenizer_bpe.h"
#include "runtime/tokenizer_world.h"

namespace rwkv {

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  decode_append(ids, out);
  return out;
}

void Tokenizer::decode_append(std::span<const int32_t> ids, std::string& out) const {
  for (int32_t id : ids) out.append(token_bytes(id));
}

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string_view ByteTokenizer::token_bytes(int32_t id) const {
  // One static table so the views stay valid for the life of the program.
  static const std::string table = [] {
    std::string t(256, '\0');
    for (int b = 0; b < 256; ++b) t[size_t(b)] = char(b);
    return t;
  }();
  if (id < 0 || id > 255) fail("token id {} is out of range for the bytes tokenizer (ids 0 to 255)", id);
  return std::string_view(table).substr(size_t(id), 1);
}

std::string find_world_vocab(const std::string& model_path) { return find_tokenizer_file(kWorldVocabFile, model_path); }

std::string find_tokenizer_file(const std::string& file_name, const std::string& model_path) {
  namespace fs = std::filesystem;
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("RWKV_TOKENIZER_DIR"); env != nullptr && *env != '\0') dirs.emplace_back(env);
  if (!model_path.empty()) {
    fs::path model_dir = fs::path(model_path).parent_path();
    if (model_dir.empty()) model_dir = ".";
    for (const char* rel : {"", "tokenizers", "../tokenizers", "../../tokenizers"}) dirs.push_back(model_dir / rel);
  }
  dirs.emplace_back("tokenizers");
  dirs.emplace_back("../shared/tokenizers");

  std::string looked;
  for (const fs::path& dir : dirs) {
    const fs::path candidate = (dir / file_name).lexically_normal();
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
    looked += "\n  " + candidate.string();
  }
  fail("cannot find the tokenizer file {}; looked in:{}\n(pass --vocab FILE or set RWKV_TOKENIZER_DIR)", file_name,
       looked);
}

namespace {

// The World vocabulary stored in a GGUF model's metadata, in the vocabulary
// file's text form; empty when `model_path` is not a GGUF file or holds none.
std::string gguf_world_vocab(const std::string& model_path) {
  if (model_path.empty()) return "";
  char magic[4] = {};
  std::ifstream in(model_path, std::ios::binary);
  if (!in.read(magic, 4) || std::string_view(magic, 4) != "GGUF") return "";
  return world_vocab_from_gguf(*open_tensor_archive(model_path));
}

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec, int64_t n_vocab, const std::string& model_path) {
  std::string kind = spec;
  if (kind.empty()) {
    if (n_vocab <= 0 || n_vocab == 65536) {
      kind = "world";
    } else if (n_vocab == 50277) {  // RWKV-4 "Pile" models: GPT-NeoX's vocabulary
      kind = "neox";
    } else if (n_vocab == 256) {
      kind = "bytes";
    } else {
      fail("no tokenizer is known for a vocabulary of {} tokens; name one (world, neox, bytes or a file)",
           n_vocab);
    }
  }

  std::unique_ptr<Tokenizer> tokenizer;
  if (kind == "bytes") {
    tokenizer = std::make_unique<ByteTokenizer>();
  } else if (kind == "world") {
    // A GGUF file may carry its World vocabulary (llama.cpp's "rwkv" tokenizer);
    // it then needs no vocabulary file beside it.
    if (std::string text = gguf_world_vocab(model_path); !text.empty())
      tokenizer = std::make_unique<WorldTokenizer>(WorldTokenizer::parse(text, model_path + " (GGUF metadata)"));
    else
      tokenizer = std::make_unique<WorldTokenizer>(WorldTokenizer::load(find_world_vocab(model_path)));
  } else if (kind == "neox") {
    tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::load(find_tokenizer_file(kNeoxTokenizerFile, model_path)));
  } else if (kind.ends_with(".json")) {
    tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::load(kind));
  } else {
    tokenizer = std::make_unique<WorldTokenizer>(WorldTokenizer::load(kind));
  }

  if (n_vocab > 0 && tokenizer->vocab_size() > n_vocab)
    fail("the {} tokenizer has {} token ids but the model's vocabulary has only {}", tokenizer->name(),
         tokenizer->vocab_size(), n_vocab);
  return tokenizer;
}

int utf8_char_length(std::string_view s, size_t pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return 1;
  int n;
  // Allowed range of the second byte (narrower than 80..BF where a wider one
  // would allow overlongs, surrogates or code points past U+10FFFF).
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;  // continuation byte, C0/C1 (overlong) or F5..FF
  }
  for (int k = 1; k < n; ++k) {
    if (pos + size_t(k) >= s.size()) return -1;
    const auto b = static_cast<unsigned char>(s[pos + size_t(k)]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
  }
  return n;
}

std::string Utf8StreamDecoder::feed(std::string_view bytes) {
  std::string buf = std::move(pending_);
  pending_.clear();
  buf.append(bytes);
  size_t i = 0;
  while (i < buf.size()) {
    const int n = utf8_char_length(buf, i);
    if (n < 0) break;  // a valid prefix cut off by the end: wait for more
    // An invalid byte goes out alone; what follows it is looked at afresh,
    // since it may start a valid character.
    i += n == 0 ? 1 : size_t(n);
  }
  pending_ = buf.substr(i);
  buf.resize(i);
  return buf;
}

std::string Utf8StreamDecoder::flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace rwkv
