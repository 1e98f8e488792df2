// Prompt-state cache: recurrent states (with the logits of their last token)
// keyed by the token prefix that produced them from the fresh state, so a
// prompt that extends an earlier one only feeds the new tokens.
//
// An RNN's state after a prefix is all it needs to go on, so one entry per
// remembered prefix is enough (unlike a transformer's KV cache, nothing grows
// with the prefix). Entries are found by a 64-bit hash of every prefix of the
// query, checked token by token; the total size is bounded by a byte budget,
// least recently used entries going first.
//
// One cache holds states of one model (the states of another model would not
// fit its sessions: Session::set_state refuses them).
//
// Thread safety: every member function may be called from several threads at
// once (one mutex guards the index). Cached states are immutable and shared:
// a lookup hands out a reference that stays valid after eviction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "model/state.h"

namespace rwkv {

class Session;

struct CachedState {
  State state;
  std::vector<float> logits;  // of the prefix's last token
};

class PromptCache {
 public:
  explicit PromptCache(size_t byte_budget);

  struct Hit {
    size_t length = 0;  // tokens of the query covered by the cached state
    std::shared_ptr<const CachedState> value;
  };

  // The longest cached prefix of `tokens` (possibly all of them) whose length
  // is a multiple of `align` or is tokens.size(); nullopt if there is none.
  std::optional<Hit> lookup(std::span<const int32_t> tokens, size_t align = 1);

  // Remembers the state reached after `tokens` (not empty) and the logits of
  // the last one, replacing an entry for the same tokens, then evicts least
  // recently used entries until the budget holds. Returns false (and keeps
  // nothing) if this entry alone exceeds the budget.
  bool insert(std::span<const int32_t> tokens, const State& state, std::span<const float> logits);

  void clear();

  struct Stats {
    size_t entries = 0;
    size_t bytes = 0;
    size_t byte_budget = 0;
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t evictions = 0;
  };
  Stats stats() const;

  // What one entry counts against the budget.
  static size_t entry_bytes(size_t n_tokens, size_t state_floats, size_t n_logits);

 private:
  struct Entry {
    uint64_t hash;
    std::vector<int32_t> tokens;
    std::shared_ptr<const CachedState> value;
    size_t bytes;
  };
  using EntryList = std::list<Entry>;  // most recently used first

  void erase(EntryList::iterator it);  // caller holds mutex_

  mutable std::mutex mutex_;
  size_t byte_budget_;
  size_t bytes_ = 0;
  EntryList lru_;
  std::unordered_map<uint64_t, EntryList::iterator> by_hash_;
  std::map<size_t, size_t> lengths_;  // prefix length -> entries of that length
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

// Brings `session` to the end of `tokens` read from the fresh state: it starts
// from the longest usable cached prefix, feeds the rest in chunks of `chunk`
// tokens (0: all at once) and caches the result. Returns the tokens fed.
//
// With chunk > 0 only prefixes at multiples of `chunk` (or the whole of
// `tokens`) are used, and the state at the last such boundary is cached as
// well, so the chunks fed are exactly those of session.feed(tokens, chunk)
// from the fresh state: the logits are bit-identical to an uncached run. With
// chunk 1 (RNN mode) that holds for every prefix; with chunk 0 any prefix is
// used, and the result equals a one-call run only to rounding (sequence mode
// sums in another order than a split run).
size_t feed_cached(Session& session, PromptCache& cache, std::span<const int32_t> tokens, int64_t chunk = 0);

}  // namespace rwkv
