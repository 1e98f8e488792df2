#include "core/thread_pool.h"

#include <cblas.h>

#include <chrono>
#include <memory>

#include "core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RWKV_PAUSE() _mm_pause()
#else
#define RWKV_PAUSE() ((void)0)
#endif

namespace rwkv {
namespace {

// Chunk index meaning "a new job is being written; wait".
constexpr uint32_t kClosed = 0xffffffffu;
// How long an idle worker spins before sleeping. Between the matrix products
// of one token the model does serial work for tens of microseconds; waking a
// sleeping thread costs about as much, so workers stay awake a little longer.
constexpr auto kSpinTime = std::chrono::microseconds(200);

thread_local bool t_inside_pool = false;

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads < 1) fail("the thread count must be at least 1 (got {})", threads);
  workers_.reserve(size_t(threads - 1));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stop_ = true;
  wake_.fetch_add(1);
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run(int64_t n, int64_t chunk, Body body, void* ctx) {
  if (n <= 0) return;
  if (chunk < 1) chunk = 1;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  std::unique_lock<std::mutex> lock(callers_, std::defer_lock);
  if (workers_.empty() || n_chunks == 1 || t_inside_pool || !lock.try_lock()) {
    for (int64_t b = 0; b < n; b += chunk) body(ctx, b, std::min(n, b + chunk));
    return;
  }
  // Close the old generation before rewriting the job, so a worker still
  // looking at it cannot claim a chunk of the new job under the old number.
  // All operations are sequentially consistent: a few per chunk cost nothing
  // next to the chunk's work and keep the protocol easy to reason about.
  const uint32_t gen = uint32_t(claim_.load() >> 32) + 1;
  claim_.store(uint64_t(gen) << 32 | kClosed);
  body_.store(body);
  ctx_.store(ctx);
  n_.store(n);
  chunk_.store(chunk);
  n_chunks_.store(n_chunks);
  done_.store(0);
  claim_.store(uint64_t(gen) << 32);
  wake_.fetch_add(1);
  if (sleepers_.load() > 0) wake_.notify_all();

  t_inside_pool = true;
  work_on(gen);
  t_inside_pool = false;
  while (done_.load() < n_chunks) RWKV_PAUSE();
}

void ThreadPool::work_on(uint32_t gen) {
  for (;;) {
    uint64_t c = claim_.load();
    if (uint32_t(c >> 32) != gen) return;
    const uint32_t index = uint32_t(c);
    if (index == kClosed) {  // the job is being written
      RWKV_PAUSE();
      continue;
    }
    if (int64_t(index) >= n_chunks_.load()) return;
    if (!claim_.compare_exchange_weak(c, c + 1)) continue;
    // The claim succeeded while generation `gen` was open, so the job fields
    // are this generation's and stay so until done_ reaches n_chunks.
    const int64_t chunk = chunk_.load(), n = n_.load();
    const int64_t begin = int64_t(index) * chunk;
    body_.load()(ctx_.load(), begin, std::min(n, begin + chunk));
    done_.fetch_add(1);
  }
}

void ThreadPool::worker_loop() {
  t_inside_pool = true;
  uint32_t seen = 0;
  for (;;) {
    auto spin_start = std::chrono::steady_clock::now();
    uint32_t gen;
    for (int spins = 0;; ++spins) {
      if (stop_) return;
      gen = uint32_t(claim_.load() >> 32);
      if (gen != seen) break;
      if ((spins & 255) != 255 || std::chrono::steady_clock::now() - spin_start < kSpinTime) {
        RWKV_PAUSE();
        continue;
      }
      // Sleep. Registering as a sleeper before the last check means a caller
      // publishing a job after that check sees us and notifies; one before it
      // is seen by the check.
      const uint32_t w = wake_.load();
      sleepers_.fetch_add(1);
      if (uint32_t(claim_.load() >> 32) == seen && !stop_) wake_.wait(w);
      sleepers_.fetch_sub(1);
      spin_start = std::chrono::steady_clock::now();
    }
    seen = gen;
    work_on(gen);
  }
}

namespace {

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : int(n);
}

std::unique_ptr<ThreadPool>& pool_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}

std::atomic<ThreadPool*> g_pool{nullptr};  // pool_slot()'s pointer, for a lock-free fast path

std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}

void replace_pool(int n) {
  auto& pool = pool_slot();
  if (pool && pool->size() == n) return;
  g_pool = nullptr;
  pool.reset();
  pool = std::make_unique<ThreadPool>(n);
  g_pool = pool.get();
  // Every BLAS call is made from inside a pool chunk on a fixed block of
  // rows, so OpenBLAS itself must stay single-threaded: its own threads would
  // oversubscribe the cores and could make results depend on the count.
  openblas_set_num_threads(1);
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) fail("the thread count must be at least 1 (got {})", n);
  std::lock_guard<std::mutex> lock(pool_mutex());
  replace_pool(n);
}

ThreadPool& thread_pool() {
  if (ThreadPool* p = g_pool.load(std::memory_order_acquire)) return *p;
  std::lock_guard<std::mutex> lock(pool_mutex());
  if (!pool_slot()) replace_pool(default_threads());
  return *pool_slot();
}

int num_threads() { return thread_pool().size(); }

}  // namespace rwkv
