#include "core/cpu_features.h"

#include <hwy/highway.h>
#include <hwy/targets.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "core/thread_pool.h"

namespace rwkv {

std::vector<SimdTarget> simd_targets() {
  std::vector<SimdTarget> out;
  // HWY_TARGETS here is the same set kernels.cpp compiles (same flags).
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) out.push_back({t, hwy::TargetName(t)});
  return out;
}

SimdTarget current_simd_target() {
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  const int64_t best = targets & -targets;  // lower bits are better targets
  return {best, hwy::TargetName(best)};
}

void set_simd_target(int64_t id) { hwy::SetSupportedTargetsForTest(id); }

double measure_read_bandwidth(size_t bytes, int repeats) {
  const size_t n = std::max<size_t>(bytes / 8, 1024);
  std::unique_ptr<uint64_t[]> buffer(new uint64_t[n]);
  // Write every page first so the reads measure memory, not page faults.
  for (size_t i = 0; i < n; ++i) buffer[i] = i;
  ThreadPool& pool = thread_pool();
  const int64_t parts = 4 * int64_t(pool.size());
  const int64_t chunk = (int64_t(n) + parts - 1) / parts;
  std::atomic<uint64_t> sink{0};
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    pool.parallel_for(int64_t(n), chunk, [&](int64_t b, int64_t e) {
      // Eight independent sums keep enough loads in flight to saturate memory.
      uint64_t s[8] = {};
      int64_t i = b;
      for (; i + 8 <= e; i += 8)
        for (int k = 0; k < 8; ++k) s[k] += buffer[size_t(i + k)];
      for (; i < e; ++i) s[0] += buffer[size_t(i)];
      uint64_t total = 0;
      for (uint64_t v : s) total += v;
      sink += total;  // an atomic update keeps the reads from being optimised away
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, double(n * 8) / seconds);
  }
  return best;
}

}  // namespace rwkv

// OpenBLAS's own query; weak so that another BLAS links too.
extern "C" char* openblas_get_corename(void) __attribute__((weak));

namespace rwkv {

std::string blas_core_name() {
  if (openblas_get_corename == nullptr) return "";
  const char* name = openblas_get_corename();
  return name != nullptr ? name : "";
}

std::string cpu_summary() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) model = line.substr(colon + 2);
      break;
    }
  }
  const std::string blas = blas_core_name();
  return fmt::format("{}, {} hardware threads, SIMD {}{}", model, std::thread::hardware_concurrency(),
                     current_simd_target().name, blas.empty() ? "" : ", OpenBLAS " + blas);
}

}  // namespace rwkv
