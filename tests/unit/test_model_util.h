// Shared helpers for tests that run models: logits at every position, token
// lists written by the fixture scripts, the spread that tolerances scale by.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"

namespace rwkv::test {

// Logits [T, V] at every position, fed `chunk` tokens at a time from a fresh
// state (1: RNN mode; the whole length: sequence mode).
inline std::vector<float> chunked_logits(const Model& model, const std::vector<int32_t>& tokens, int64_t chunk) {
  const int64_t V = model.config().n_vocab, T = int64_t(tokens.size());
  State state = model.new_state();
  std::vector<float> out(size_t(T * V));
  for (int64_t s = 0; s < T; s += chunk) {
    const int64_t n = std::min(chunk, T - s);
    model.forward(std::span<const int32_t>(tokens.data() + s, size_t(n)), state, Logits::All,
                  std::span<float>(out).subspan(size_t(s * V)));
  }
  return out;
}

// Comma-separated token ids, as the fixture scripts write them.
inline std::vector<int32_t> read_tokens(const std::string& path) {
  std::ifstream in(path);
  std::vector<int32_t> tokens;
  std::string item;
  while (std::getline(in, item, ',')) tokens.push_back(std::stoi(item));
  return tokens;
}

inline float stddev(std::span<const float> v) {
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double sq = 0;
  for (float x : v) sq += (x - mean) * (x - mean);
  return float(std::sqrt(sq / double(v.size())));
}

// n pseudo-random token ids below `vocab`, the same for the same seed.
inline std::vector<int32_t> some_tokens(int64_t vocab, size_t n, uint32_t seed) {
  std::vector<int32_t> t;
  uint32_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t.push_back(int32_t((x >> 8) % uint32_t(vocab)));
  }
  return t;
}

}  // namespace rwkv::test
