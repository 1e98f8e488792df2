// Training data: documents from a .jsonl file (one {"text": ...} object per
// line, RWKV-LM's format), a plain text file (one document), tokenised and
// concatenated with the end-of-document token 0 after each document, as the
// official binidx data is, or RWKV-LM's binidx pair itself (PREFIX.bin and
// PREFIX.idx, already tokenised; named by either file or the prefix). Samples are windows of ctx_len + 1 tokens at
// multiples of ctx_len, visited in a seeded random order per epoch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tokenizer.h"

namespace rwkv::train {

struct Corpus {
  std::vector<int32_t> train;  // token stream of the training split
  std::vector<int32_t> val;    // of the validation split (may be empty)
  int64_t n_docs = 0, train_docs = 0, val_docs = 0;
  uint64_t hash = 0;  // of both streams, to recognise the data on --resume
};

// Reads and tokenises `path`. Fails (rwkv::Error) for a missing or unreadable
// file, a .jsonl line that is not an object with a string "text", or no text
// at all. The validation split is the last documents holding about
// val_fraction of the tokens (the tail of the stream for a single document).
Corpus load_corpus(const std::string& path, const Tokenizer& tokenizer, double val_fraction);

// Deterministic sample order: sample number s (counting from 0 over the whole
// run) is a window of the training stream chosen by (seed, s) alone, so a
// resumed run draws exactly the samples the uninterrupted one would.
class Sampler {
 public:
  // Fails when the training split cannot hold one window of ctx_len + 1 tokens.
  Sampler(const std::vector<int32_t>& stream, int64_t ctx_len, uint64_t seed);
  int64_t windows() const { return n_windows_; }
  // Writes inputs [ctx_len] and targets [ctx_len] (the inputs shifted by one).
  void sample(int64_t s, int32_t* inputs, int32_t* targets);

 private:
  const std::vector<int32_t>& stream_;
  int64_t ctx_len_, n_windows_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace rwkv::train
