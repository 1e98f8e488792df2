// A minimal parallel loop for the trainer's per-sequence / per-head work.
// Matrix products are threaded by OpenBLAS itself; this covers the rest.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace rwkv::train {

// Threads used by parallel_for (hardware threads; at least 1).
inline int64_t worker_count() { return std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency())); }

// Calls fn(i) for i in [0, n), split into contiguous ranges over up to
// worker_count() threads; runs inline when n is small. fn must only write
// data owned by index i. The first exception thrown is rethrown.
template <typename Fn>
void parallel_for(int64_t n, Fn&& fn) {
  const int64_t threads = std::min(worker_count(), n);
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i) fn(i);
      } catch (...) {
        errors[size_t(t)] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace rwkv::train
