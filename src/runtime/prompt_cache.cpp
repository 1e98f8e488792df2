#include "runtime/prompt_cache.h"

#include <algorithm>

#include "core/error.h"
#include "runtime/session.h"

namespace rwkv {
namespace {

// Hash of a prefix extended by one token; every prefix's hash comes from the
// one before it, so all prefixes of a query are hashed in one pass.
uint64_t extend_hash(uint64_t h, int32_t token) {
  h = (h ^ (uint64_t(uint32_t(token)) + 0x9e3779b97f4a7c15ULL)) * 0xbf58476d1ce4e5b9ULL;
  return h ^ (h >> 31);
}

uint64_t hash_of(std::span<const int32_t> tokens) {
  uint64_t h = 0;
  for (int32_t t : tokens) h = extend_hash(h, t);
  return h;
}

}  // namespace

PromptCache::PromptCache(size_t byte_budget) : byte_budget_(byte_budget) {}

size_t PromptCache::entry_bytes(size_t n_tokens, size_t state_floats, size_t n_logits) {
  // Payload plus a rough allowance for the list node, hash slot and control blocks.
  constexpr size_t kOverhead = 160;
  return (n_tokens + state_floats + n_logits) * 4 + kOverhead;
}

std::optional<PromptCache::Hit> PromptCache::lookup(std::span<const int32_t> tokens, size_t align) {
  if (align == 0) align = 1;
  std::vector<uint64_t> prefix_hash(tokens.size() + 1);
  for (size_t i = 0; i < tokens.size(); ++i) prefix_hash[i + 1] = extend_hash(prefix_hash[i], tokens[i]);

  std::lock_guard lock(mutex_);
  // Only lengths that some entry has are worth probing, longest first.
  for (auto it = std::make_reverse_iterator(lengths_.upper_bound(tokens.size())); it != lengths_.rend(); ++it) {
    const size_t length = it->first;
    if (length % align != 0 && length != tokens.size()) continue;
    const auto found = by_hash_.find(prefix_hash[length]);
    if (found == by_hash_.end()) continue;
    const Entry& entry = *found->second;
    if (entry.tokens.size() != length || !std::equal(entry.tokens.begin(), entry.tokens.end(), tokens.begin()))
      continue;  // a hash collision
    lru_.splice(lru_.begin(), lru_, found->second);
    ++hits_;
    return Hit{length, entry.value};
  }
  ++misses_;
  return std::nullopt;
}

bool PromptCache::insert(std::span<const int32_t> tokens, const State& state, std::span<const float> logits) {
  if (tokens.empty()) fail("prompt cache: an empty prefix is the fresh state and is not cached");
  const size_t bytes = entry_bytes(tokens.size(), state.size(), logits.size());
  const uint64_t hash = hash_of(tokens);
  // Copy outside the lock: states can be megabytes.
  auto value = std::make_shared<const CachedState>(CachedState{state, {logits.begin(), logits.end()}});
  Entry entry{hash, {tokens.begin(), tokens.end()}, std::move(value), bytes};

  std::lock_guard lock(mutex_);
  // Same tokens: replaced. Another prefix with the same hash: replaced too
  // (the index holds one entry per hash), which only costs a future miss.
  if (auto it = by_hash_.find(hash); it != by_hash_.end()) erase(it->second);
  if (bytes > byte_budget_) return false;
  while (bytes_ + bytes > byte_budget_ && !lru_.empty()) {
    erase(std::prev(lru_.end()));
    ++evictions_;
  }
  lru_.push_front(std::move(entry));
  by_hash_[hash] = lru_.begin();
  ++lengths_[tokens.size()];
  bytes_ += bytes;
  return true;
}

void PromptCache::erase(EntryList::iterator it) {
  auto length = lengths_.find(it->tokens.size());
  if (--length->second == 0) lengths_.erase(length);
  bytes_ -= it->bytes;
  by_hash_.erase(it->hash);
  lru_.erase(it);
}

void PromptCache::clear() {
  std::lock_guard lock(mutex_);
  lru_.clear();
  by_hash_.clear();
  lengths_.clear();
  bytes_ = 0;
}

PromptCache::Stats PromptCache::stats() const {
  std::lock_guard lock(mutex_);
  return Stats{lru_.size(), bytes_, byte_budget_, hits_, misses_, evictions_};
}

size_t feed_cached(Session& session, PromptCache& cache, std::span<const int32_t> tokens, int64_t chunk) {
  const size_t align = chunk > 0 ? size_t(chunk) : 1;
  size_t start = 0;
  if (auto hit = cache.lookup(tokens, align)) {
    session.set_state(hit->value->state, hit->value->logits);
    start = hit->length;
  } else {
    session.reset();
  }
  if (start == tokens.size()) return 0;

  // The last chunk boundary before the end is worth remembering too: a longer
  // prompt with this beginning can start there and keep the same chunks.
  const size_t boundary = align > 1 ? tokens.size() / align * align : tokens.size();
  if (boundary > start && boundary < tokens.size()) {
    session.feed(tokens.subspan(start, boundary - start), chunk);
    cache.insert(tokens.first(boundary), session.state(), session.logits());
    session.feed(tokens.subspan(boundary), chunk);
  } else {
    session.feed(tokens.subspan(start), chunk);
  }
  cache.insert(tokens, session.state(), session.logits());
  return tokens.size() - start;
}

}  // namespace rwkv
