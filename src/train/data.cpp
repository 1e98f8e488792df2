#include "train/data.h"

#include <xxhash.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "core/error.h"
#include "runtime/documents.h"

namespace rwkv::train {

Corpus load_corpus(const std::string& path, const Tokenizer& tokenizer, double val_fraction) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    fail("validation fraction must be in [0, 1) (got {})", val_fraction);
  std::vector<std::string> texts = read_documents(path);
  std::erase_if(texts, [](const std::string& t) { return t.empty(); });
  if (texts.empty()) fail("{}: no training text (no document with non-empty text)", path);
  std::vector<std::vector<int32_t>> docs;
  size_t total = 0;
  for (const std::string& t : texts) {
    docs.push_back(tokenizer.encode(t));
    docs.back().push_back(0);  // end of document, as RWKV-LM's binidx data
    total += docs.back().size();
  }
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
