#include "train/data.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/mapped_file.h"
#include "runtime/documents.h"

namespace rwkv::train {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// RWKV-LM's binidx data (Megatron's MMapIndexedDataset): PREFIX.idx holds the
// magic "MMIDIDX\0\0", version 1 (u64), a dtype code (u8), the number of
// documents n and of doc_idx entries m (u64 each), then sizes int32[n],
// pointers int64[n] (byte offsets into PREFIX.bin) and doc_idx int64[m].
// PREFIX.bin is the tokens, already with the end-of-document 0 after each
// document. Returns the prefix when `path` names either file of such a pair.
std::string binidx_prefix(const std::string& path) {
  std::string prefix = path;
  if (ends_with(path, ".idx") || ends_with(path, ".bin")) prefix = path.substr(0, path.size() - 4);
  std::error_code ec;
  if (std::filesystem::is_regular_file(prefix + ".idx", ec) && std::filesystem::is_regular_file(prefix + ".bin", ec))
    return prefix;
  return {};
}

// Documents of a binidx pair, each a token list, every id checked against the vocabulary.
std::vector<std::vector<int32_t>> read_binidx(const std::string& prefix, int32_t vocab) {
  const auto idx = MappedFile::open(prefix + ".idx");
  const auto bin = MappedFile::open(prefix + ".bin");
  const std::string idx_name = prefix + ".idx";
  const std::byte* p = idx->data();
  const size_t size = idx->size();
  size_t pos = 0;
  auto take = [&](void* dst, size_t n, const char* what) {
    if (n > size - pos) fail("{}: truncated binidx index (reading {} at byte {})", idx_name, what, pos);
    std::memcpy(dst, p + pos, n);
    pos += n;
  };
  char magic[9];
  take(magic, 9, "the magic");
  if (std::memcmp(magic, "MMIDIDX\0\0", 9) != 0) fail("{}: not a binidx index (bad magic)", idx_name);
  uint64_t version = 0, n_docs = 0, n_doc_idx = 0;
  uint8_t code = 0;
  take(&version, 8, "the version");
  if (version != 1) fail("{}: binidx version {} is not supported (only 1)", idx_name, version);
  take(&code, 1, "the dtype");
  int width = 0;
  if (code == 1) width = 1;       // uint8
  else if (code == 8) width = 2;  // uint16, what RWKV-LM's make_data.py writes
  else if (code == 4) width = 4;  // int32
  else fail("{}: binidx dtype code {} is not a token type this reader takes (1 uint8, 8 uint16, 4 int32)", idx_name, code);
  take(&n_docs, 8, "the document count");
  take(&n_doc_idx, 8, "the doc_idx count");
  // Checked against what is left before anything that size is allocated.
  if (n_docs > (size - pos) / 12) fail("{}: claims {} documents, more than the file can hold (truncated or corrupt index)", idx_name, n_docs);
  std::vector<int32_t> sizes(n_docs);
  std::vector<int64_t> pointers(n_docs);
  take(sizes.data(), n_docs * 4, "the sizes");
  take(pointers.data(), n_docs * 8, "the pointers");
  if (n_doc_idx > (size - pos) / 8) fail("{}: truncated binidx index (doc_idx)", idx_name);
  const size_t bin_tokens = bin->size() / size_t(width);
  if (bin->size() % size_t(width) != 0)
    fail("{}.bin: {} bytes is not a whole number of {}-byte tokens", prefix, bin->size(), width);
  std::vector<std::vector<int32_t>> docs;
  docs.reserve(n_docs);
  for (uint64_t d = 0; d < n_docs; ++d) {
    const int64_t ptr = pointers[d], count = sizes[d];
    if (count < 0 || ptr < 0 || ptr % width != 0 || uint64_t(ptr) / uint64_t(width) > bin_tokens ||
        uint64_t(count) > bin_tokens - uint64_t(ptr) / uint64_t(width))
      fail("{}: document {} (offset {}, {} tokens) lies outside {}.bin ({} tokens)", idx_name, d, ptr, count, prefix,
           bin_tokens);
    std::vector<int32_t> doc(static_cast<size_t>(count));
    const std::byte* src = bin->data() + ptr;
    for (int64_t i = 0; i < count; ++i) {
      uint32_t v = 0;
      std::memcpy(&v, src + i * width, size_t(width));  // little-endian host, as the files are
      if (v >= uint32_t(vocab))
        fail("{}.bin: token {} of document {} is {}, outside the vocabulary of {}", prefix, i, d, v, vocab);
      doc[size_t(i)] = int32_t(v);
    }
    docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace

Corpus load_corpus(const std::string& path, const Tokenizer& tokenizer, double val_fraction) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    fail("validation fraction must be in [0, 1) (got {})", val_fraction);
  std::vector<std::vector<int32_t>> docs;
  if (const std::string prefix = binidx_prefix(path); !prefix.empty()) {
    docs = read_binidx(prefix, tokenizer.vocab_size());
    std::erase_if(docs, [](const std::vector<int32_t>& d) { return d.empty(); });
    if (docs.empty()) fail("{}: no training tokens (every document is empty)", path);
  } else {
    std::vector<std::string> texts = read_documents(path);
    std::erase_if(texts, [](const std::string& t) { return t.empty(); });
    if (texts.empty()) fail("{}: no training text (no document with non-empty text)", path);
    for (const std::string& t : texts) {
      docs.push_back(tokenizer.encode(t));
      docs.back().push_back(0);  // end of document, as RWKV-LM's binidx data
    }
  }
  size_t total = 0;
  for (const auto& d : docs) total += d.size();
  Corpus c;
  c.n_docs = int64_t(docs.size());
  const size_t want_val = size_t(double(total) * val_fraction);
  if (docs.size() == 1) {
    const std::vector<int32_t>& d = docs[0];
    c.train.assign(d.begin(), d.end() - ptrdiff_t(want_val));
    c.val.assign(d.end() - ptrdiff_t(want_val), d.end());
    c.train_docs = 1;
    c.val_docs = want_val > 0 ? 1 : 0;
  } else {
    size_t split = docs.size();
    size_t val_tokens = 0;
    while (want_val > 0 && split > 1 && val_tokens < want_val) val_tokens += docs[--split].size();
    for (size_t i = 0; i < docs.size(); ++i) {
      auto& dst = i < split ? c.train : c.val;
      dst.insert(dst.end(), docs[i].begin(), docs[i].end());
    }
    c.train_docs = int64_t(split);
    c.val_docs = int64_t(docs.size() - split);
  }
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  const uint64_t sizes[2] = {c.train.size(), c.val.size()};
  XXH64_update(st, sizes, sizeof sizes);
  XXH64_update(st, c.train.data(), c.train.size() * sizeof(int32_t));
  XXH64_update(st, c.val.data(), c.val.size() * sizeof(int32_t));
  c.hash = XXH64_digest(st);
  XXH64_freeState(st);
  return c;
}

Sampler::Sampler(const std::vector<int32_t>& stream, int64_t ctx_len, uint64_t seed)
    : stream_(stream), ctx_len_(ctx_len), seed_(seed) {
  if (ctx_len <= 0) fail("ctx-len must be positive (got {})", ctx_len);
  n_windows_ = (int64_t(stream.size()) - 1) / ctx_len;
  if (n_windows_ <= 0)
    fail(
        "ctx-len {} is larger than the training data: a sample needs {} tokens, the training split has {}; "
        "lower --ctx-len or give more data",
        ctx_len, ctx_len + 1, stream.size());
}

void Sampler::sample(int64_t s, int32_t* inputs, int32_t* targets) {
  const int64_t epoch = s / n_windows_;
  if (epoch != epoch_) {
    order_.resize(size_t(n_windows_));
    std::iota(order_.begin(), order_.end(), int64_t(0));
    // Our own Fisher-Yates over mt19937_64: std::shuffle's use of the engine
    // is unspecified, and the order must not change between builds.
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + uint64_t(epoch));
    for (int64_t i = n_windows_ - 1; i > 0; --i) std::swap(order_[size_t(i)], order_[size_t(rng() % uint64_t(i + 1))]);
    epoch_ = epoch;
  }
  const int32_t* p = stream_.data() + order_[size_t(s % n_windows_)] * ctx_len_;
  std::copy(p, p + ctx_len_, inputs);
  std::copy(p + 1, p + ctx_len_ + 1, targets);
}

}  // namespace rwkv::train
