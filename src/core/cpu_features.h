// What the processor offers and which SIMD code the kernels run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rwkv {

struct SimdTarget {
  int64_t id = 0;    // Highway's target bit
  std::string name;  // e.g. "AVX3" (AVX-512), "AVX2", "SSE4", "EMU128" (portable fallback)
};

// The instruction sets compiled into this binary that this CPU can run, best first.
std::vector<SimdTarget> simd_targets();

// The instruction set the kernels dispatch to now.
SimdTarget current_simd_target();

// Makes the kernels use `id` (one of simd_targets()), or the best again for
// id 0. For tests and benchmarks; not to be called while kernels run.
void set_simd_target(int64_t id);

// Memory read bandwidth in bytes/s: the best of `repeats` streaming reads of
// a `bytes` buffer (far larger than the caches), split over the thread pool's
// threads as the matrix kernels are. The ceiling for decoding, which reads
// every weight once per token.
double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int repeats = 5);

// The kernel set OpenBLAS picked for this CPU (e.g. "Cooperlake"), or ""
// when the BLAS in use is not OpenBLAS. It decides the fp16/bf16 prefill
// speed: OPENBLAS_CORETYPE=Haswell in the environment (set on this project's
// build machines) leaves AVX-512 unused and made fp16 prefill ~1.5x slower.
std::string blas_core_name();

// One line describing the CPU: model name, hardware threads, SIMD target.
std::string cpu_summary();

}  // namespace rwkv
