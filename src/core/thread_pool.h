// A persistent pool of worker threads for data-parallel loops (matrix rows),
// and the process-wide thread count.
//
// Decoding calls parallel_for a few hundred times per token, each call lasting
// tens of microseconds, so threads are created once and wait between calls
// (spinning briefly, then sleeping on a futex); the calling thread takes part
// in the work. Work is split into chunks claimed dynamically, so a core slowed
// by another process does not hold up the others. Which thread runs a chunk
// never changes the result: callers split outputs (rows), never reductions.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace rwkv {

class ThreadPool {
 public:
  // A pool of `threads` threads in all: the caller plus threads - 1 workers.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end) for the chunks [0, chunk), [chunk, 2 chunk), ... of
  // [0, n), in parallel, and returns when all are done. fn must not throw.
  // A call made from inside a chunk, or while another thread is using the
  // pool, runs serially on the calling thread.
  template <typename Fn>
  void parallel_for(int64_t n, int64_t chunk, Fn&& fn) {
    using F = std::remove_reference_t<Fn>;
    run(n, chunk, [](void* ctx, int64_t b, int64_t e) { (*static_cast<F*>(ctx))(b, e); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using Body = void (*)(void* ctx, int64_t begin, int64_t end);
  void run(int64_t n, int64_t chunk, Body body, void* ctx);
  void worker_loop();
  // Claims and runs chunks of the job of generation `gen` until none are left.
  void work_on(uint32_t gen);

  std::vector<std::thread> workers_;
  std::mutex callers_;  // one parallel_for at a time uses the workers
  // (generation << 32) | next chunk index; a new job bumps the generation.
  std::atomic<uint64_t> claim_{0};
  // The job of the current generation; written only while no chunk of the
  // previous job can still be claimed.
  std::atomic<Body> body_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> n_{0}, chunk_{1}, n_chunks_{0};
  std::atomic<int64_t> done_{0};     // chunks finished in the current job
  std::atomic<uint32_t> wake_{0};    // futex word the sleeping workers wait on
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

// The process-wide thread count used by the kernels (default: the number of
// hardware threads). set_num_threads(n) replaces the pool; n must be >= 1.
// Not to be called while another thread is running kernels.
void set_num_threads(int n);
int num_threads();
ThreadPool& thread_pool();

// Splits [0, n) into chunks that are multiples of `align` (so a kernel that
// handles `align` rows at a time sees the same groups for any thread count),
// about four per thread, and runs fn(begin, end) on the pool.
template <typename Fn>
void parallel_rows(int64_t n, int64_t align, Fn&& fn) {
  ThreadPool& pool = thread_pool();
  const int64_t parts = int64_t(pool.size()) * 4;
  int64_t chunk = (n + parts - 1) / parts;
  chunk = (chunk + align - 1) / align * align;
  if (chunk < align) chunk = align;
  pool.parallel_for(n, chunk, std::forward<Fn>(fn));
}

// Runs fn(begin, end) over n items of about `work` elements each (tokens of
// an element-wise step): on the calling thread when the whole job is too
// small to pay for a hand-off, else on the pool. For loops whose items are
// independent, so the split never changes a result.
template <typename Fn>
void parallel_items(int64_t n, int64_t work, Fn&& fn) {
  if (n <= 1 || n * work < (int64_t(1) << 14) || thread_pool().size() == 1) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
  parallel_rows(n, 1, std::forward<Fn>(fn));
}

}  // namespace rwkv
