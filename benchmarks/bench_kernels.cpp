// Google Benchmark timings of the matrix kernels, at the shapes of a 0.1B
// RWKV-7 (768 wide, FFN 3072, vocabulary 65536). Build with
// -DRWKV_BUILD_BENCHMARKS=ON; run build/benchmarks/rwkv_benchmarks.
// Bytes/s counts weight bytes: decoding is bound by reading them.
#include <benchmark/benchmark.h>

#include <cstring>
#include <algorithm>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/kernels.h"
#include "core/quant.h"
#include "core/thread_pool.h"

namespace rwkv {
namespace {

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<std::byte> packed;  // as models load the packable types
  MatRef ref;
};

Weights make_weights(DType t, int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> row(static_cast<size_t>(cols));
  Weights w;
  const size_t row_bytes = dtype_bytes(t, cols);
  w.bytes.resize(size_t(rows) * row_bytes);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(rng);
    uint8_t* dst = w.bytes.data() + size_t(r) * row_bytes;
    if (is_quantized(t)) {
      quantize_row(t, row.data(), dst, cols);
      continue;
    }
    for (int64_t c = 0; c < cols; ++c) {
      if (t == DType::F32) std::memcpy(dst + 4 * c, &row[size_t(c)], 4);
      const uint16_t h = t == DType::F16 ? f32_to_f16(row[size_t(c)]) : f32_to_bf16(row[size_t(c)]);
      if (t != DType::F32) std::memcpy(dst + 2 * c, &h, 2);
    }
  }
  w.ref = MatRef{t, rows, cols, w.bytes.data()};
  if (packable(t)) {
    w.packed = pack_matrix(w.ref);
    w.ref.packed = w.packed.data();
  }
  return w;
}

// Args: dtype, rows, cols, tokens, threads, QuantDot mode.
void BM_Matmul(benchmark::State& state) {
  const auto t = DType(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), n = state.range(3);
  set_num_threads(int(state.range(4)));
  set_quant_dot(QuantDot(state.range(5)));
  const Weights w = make_weights(t, rows, cols);
  std::vector<float> x(size_t(n * cols), 0.01f), y(size_t(n * rows));
  for (auto _ : state) {
    matmul(w.ref, x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(w.ref.bytes()));
  state.counters["tokens/s"] = benchmark::Counter(double(state.iterations() * n), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(dtype_name(t)) + " " + current_simd_target().name +
                 (is_quantized(t) ? (quant_dot() == QuantDot::Q8Activations ? " q8-activations" : " decode-to-float")
                                  : ""));
  set_quant_dot(QuantDot::Q8Activations);
}

void decode_shapes(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                  DType::Q5_1})
    for (int threads : {1, 2})
      for (int mode = 0; mode < (is_quantized(t) ? 2 : 1); ++mode) {
        b->Args({int64_t(t), 768, 768, 1, threads, mode});   // att.receptance etc.
        b->Args({int64_t(t), 3072, 768, 1, threads, mode});  // ffn.key
        b->Args({int64_t(t), 768, 3072, 1, threads, mode});  // ffn.value
      }
  for (int threads : {1, 2}) b->Args({int64_t(DType::F16), 65536, 768, 1, threads, 0});  // head
}

void prefill_shapes(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F32, DType::F16, DType::Q8_0, DType::Q4_0})
    for (int64_t n : {int64_t(4), int64_t(16), int64_t(64), int64_t(512)})
      for (int threads : {1, 2}) b->Args({int64_t(t), 3072, 768, n, threads, 0});
}

// As BM_Matmul with one token, cycling through copies of the matrix that
// together far exceed the caches, as decoding does (each layer's weights are
// read once per token). Args: dtype, rows, cols, threads, QuantDot mode.
void BM_MatvecCold(benchmark::State& state) {
  const auto t = DType(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2);
  set_num_threads(int(state.range(3)));
  set_quant_dot(QuantDot(state.range(4)));
  const Weights w = make_weights(t, rows, cols);
  const size_t copies = std::max<size_t>(2, (size_t(512) << 20) / w.bytes.size());
  std::vector<std::vector<uint8_t>> data(copies, w.bytes);
  std::vector<std::vector<std::byte>> packed(w.ref.packed ? copies : 0, w.packed);
  std::vector<float> x(static_cast<size_t>(cols), 0.01f), y(static_cast<size_t>(rows));
  size_t i = 0;
  for (auto _ : state) {
    MatRef m = w.ref;
    if (m.packed) m.packed = packed[i % copies].data();
    m.data = data[i++ % copies].data();
    matvec(m, x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(w.ref.bytes()));
  state.SetLabel(std::string(dtype_name(t)) + " " + current_simd_target().name +
                 (is_quantized(t) ? (quant_dot() == QuantDot::Q8Activations ? " q8-activations" : " decode-to-float")
                                  : ""));
  set_quant_dot(QuantDot::Q8Activations);
}

void cold_shapes(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                  DType::Q5_1})
    for (int threads : {1, 2})
      for (int mode = 0; mode < (is_quantized(t) ? 2 : 1); ++mode) {
        b->Args({int64_t(t), 768, 768, threads, mode});
        b->Args({int64_t(t), 3072, 768, threads, mode});
      }
}

// The machine these were written on is shared: with --benchmark_repetitions,
// "min" (the least disturbed repetition) is the figure to compare.
double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

BENCHMARK(BM_MatvecCold)
    ->Name("cold")
    ->Apply(cold_shapes)
    ->UseRealTime()
    ->ComputeStatistics("min", min_of)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Matmul)
    ->Name("decode")
    ->Apply(decode_shapes)
    ->UseRealTime()
    ->ComputeStatistics("min", min_of)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Matmul)
    ->Name("prefill")
    ->Apply(prefill_shapes)
    ->UseRealTime()
    ->ComputeStatistics("min", min_of)
    ->Unit(benchmark::kMicrosecond);

// One decoded token's matrix-vector products of a 0.1B RWKV-7 (12 layers of
// r k v o [768, 768], ffn key [3072, 768] and value [768, 3072] in `dtype`,
// eight LoRAs [64, 768] / [768, 64] in f16, then the f16 head [65536, 768]),
// each matrix its own buffer, read in model order: the kernels' share of a
// decode step without the rest of the model. Args: dtype, threads.
void BM_DecodeSweep(benchmark::State& state) {
  const auto t = DType(state.range(0));
  set_num_threads(int(state.range(1)));
  std::vector<Weights> mats;
  for (int layer = 0; layer < 12; ++layer) {
    for (int i = 0; i < 4; ++i) mats.push_back(make_weights(t, 768, 768));
    for (int i = 0; i < 4; ++i) {
      mats.push_back(make_weights(DType::F16, 64, 768));
      mats.push_back(make_weights(DType::F16, 768, 64));
    }
    mats.push_back(make_weights(t, 3072, 768));
    mats.push_back(make_weights(t, 768, 3072));
  }
  mats.push_back(make_weights(DType::F16, 65536, 768));
  size_t bytes = 0;
  for (const auto& m : mats) bytes += m.ref.bytes();
  std::vector<float> x(3072, 0.01f), y(65536);
  for (auto _ : state) {
    for (const auto& m : mats) matvec(m.ref, x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes));
  state.counters["tokens/s"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(dtype_name(t)) + " " + current_simd_target().name);
}
BENCHMARK(BM_DecodeSweep)
    ->Name("sweep")
    ->ArgsProduct({{int64_t(DType::F16), int64_t(DType::Q8_0), int64_t(DType::Q4_0)}, {1, 2}})
    ->UseRealTime()
    ->ComputeStatistics("min", min_of)
    ->Unit(benchmark::kMillisecond);

void BM_Bandwidth(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  for (auto _ : state) state.counters["GB/s"] = measure_read_bandwidth(size_t(512) << 20, 1) / 1e9;
}
BENCHMARK(BM_Bandwidth)->Arg(1)->Arg(2)->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace rwkv

// RWKV_SIMD_TARGET=AVX2 (or another name from simd_targets()) times that
// instruction set instead of the best one.
int main(int argc, char** argv) {
  if (const char* want = std::getenv("RWKV_SIMD_TARGET"))
    for (const auto& t : rwkv::simd_targets())
      if (t.name == want) rwkv::set_simd_target(t.id);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
