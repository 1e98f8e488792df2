#include "core/cpu_features.h"

#include <hwy/highway.h>
#include <hwy/targets.h>

#include <fstream>
#include <thread>

#include <fmt/format.h>

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
  return fmt::format("{}, {} hardware threads, SIMD {}", model, std::thread::hardware_concurrency(),
                     current_simd_target().name);
}

}  // namespace rwkv
