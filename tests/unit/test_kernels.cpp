// The SIMD matrix kernels against the scalar reference, on every instruction
// set this CPU runs, for every weight type, odd shapes, unaligned data and 1
// to 4 threads; bit-identical results across thread counts; the thread pool.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <iostream>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/quant.h"
#include "core/thread_pool.h"
#include "formats/rwkvcpp.h"
#include "test_util.h"

namespace rwkv {
namespace {

constexpr DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                               DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_NL};

// Restores the default SIMD target and thread count after a test.
class KernelTest : public ::testing::Test {
 protected:
  void TearDown() override {
    set_simd_target(0);
    set_quant_dot(QuantDot::Q8Activations);
    set_num_threads(int(std::max(1u, std::thread::hardware_concurrency())));
  }
};

// A [rows, cols] matrix of type t holding random weights, stored `offset`
// bytes into its buffer so that the kernels see unaligned rows.
struct TestMatrix {
  std::vector<uint8_t> buffer;
  std::vector<std::byte> packed;
  MatRef ref;
};

// The same matrix with its packed copy for the int8 kernels (as models load
// Q8_0, Q4_0, Q4_1 and Q4_NL weights).
TestMatrix with_packed(TestMatrix m) {
  m.packed = pack_matrix(m.ref);
  m.ref.packed = m.packed.data();
  return m;
}

TestMatrix random_matrix(DType t, int64_t rows, int64_t cols, size_t offset, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(size_t(rows * cols));
  for (float& v : w) v = normal(rng);
  TestMatrix m;
  const size_t row_bytes = dtype_bytes(t, cols);
  m.buffer.assign(offset + size_t(rows) * row_bytes + 64, 0);
  uint8_t* data = m.buffer.data() + offset;
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = w.data() + r * cols;
    uint8_t* dst = data + size_t(r) * row_bytes;
    for (int64_t c = 0; c < cols; ++c) {
      if (t == DType::F32) std::memcpy(dst + 4 * c, src + c, 4);
      if (t == DType::F16 || t == DType::BF16) {
        const uint16_t h = t == DType::F16 ? f32_to_f16(src[c]) : f32_to_bf16(src[c]);
        std::memcpy(dst + 2 * c, &h, 2);
      }
    }
    if (is_quantized(t)) quantize_row(t, src, dst, cols);
  }
  m.ref = MatRef{t, rows, cols, data};
  return m;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Bound on |fast - exact| for one output: float32 sums of cols products,
// each rounded (2^-24 relative) with the running sum, cannot drift further
// than cols * 2^-23 * sum |w x|. Typical errors are ~100x smaller; a wrong
// element, block or row shows as an error of order sum |w x| itself.
// Quantized weights with int8 activations (QuantDot::Q8Activations, below
// kGemmMinRows rows of X) also round each x to a step dx = absmax / 127 of
// its 32-block: that adds at most sum over blocks of dx / 2 * sum |w|.
std::vector<float> error_bounds(const MatRef& w, const float* x, int64_t n) {
  const bool q8 =
      is_quantized(w.dtype) && quant_dot() == QuantDot::Q8Activations && (n < kGemmMinRows || w.packed != nullptr);
  std::vector<float> row(static_cast<size_t>(w.cols));
  std::vector<float> bound(static_cast<size_t>(n * w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    convert_to_f32(w.dtype, static_cast<const uint8_t*>(w.data) + size_t(r) * w.row_bytes(), row.data(),
                   size_t(w.cols));
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.cols;
      double s = 0, rounding = 0;
      for (int64_t c = 0; c < w.cols; ++c) s += std::fabs(double(row[size_t(c)]) * xt[c]);
      if (q8) {
        for (int64_t b = 0; b < w.cols; b += 32) {
          double amax = 0, wsum = 0;
          for (int64_t j = b; j < b + 32; ++j) {
            amax = std::max(amax, double(std::fabs(xt[j])));
            wsum += std::fabs(row[size_t(j)]);
          }
          rounding += 0.5001 * amax / 127 * wsum;
        }
      }
      bound[size_t(t * w.rows + r)] = float(s * double(w.cols + 2) * std::ldexp(1.0, -23) + rounding) + FLT_MIN;
    }
  }
  return bound;
}

void expect_matches_reference(const MatRef& w, const float* x, int64_t n, const std::string& what) {
  std::vector<float> fast(static_cast<size_t>(n * w.rows), NAN), exact(static_cast<size_t>(n * w.rows), NAN);
  matmul(w, x, n, fast.data());
  reference::matmul(w, x, n, exact.data());
  const auto bound = error_bounds(w, x, n);
  int bad = 0;
  for (size_t i = 0; i < fast.size() && bad < 5; ++i) {
    if (!(std::fabs(fast[i] - exact[i]) <= bound[i])) {
      ADD_FAILURE() << what << ": output " << i << " (token " << i / size_t(w.rows) << ", row " << i % size_t(w.rows)
                    << ") is " << fast[i] << ", reference " << exact[i] << ", bound " << bound[i];
      ++bad;
    }
  }
}

TEST_F(KernelTest, EveryTargetTypeAndShapeMatchesTheScalarReference) {
  const auto targets = simd_targets();
  ASSERT_FALSE(targets.empty());
  std::cout << "[ targets  ]";
  for (const SimdTarget& t : targets) std::cout << " " << t.name;
  std::cout << "\n";
  const int64_t float_cols[] = {1, 3, 8, 15, 16, 17, 31, 33, 64, 100, 257};
  const int64_t quant_cols[] = {32, 64, 96, 160, 320};
  const int64_t row_counts[] = {1, 2, 3, 4, 5, 7, 9, 70};
  const int64_t token_counts[] = {1, 2, 3, kGemmMinRows, kGemmMinRows + 3};
  uint32_t seed = 1;
  for (const SimdTarget& target : targets) {
    set_simd_target(target.id);
    ASSERT_EQ(current_simd_target().id, target.id);
    for (DType t : kAllTypes) {
      const auto all_cols = is_quantized(t) ? std::span<const int64_t>(quant_cols) : std::span<const int64_t>(float_cols);
      for (int64_t cols : all_cols) {
        for (int64_t rows : row_counts) {
          // Unaligned: weights 1 element (or 1 byte) and x 1 float past alignment.
          const size_t offset = is_quantized(t) ? 1 : dtype_size(t);
          const TestMatrix plain = random_matrix(t, rows, cols, offset, ++seed);
          std::vector<const TestMatrix*> layouts = {&plain};
          TestMatrix packed;
          if (packable(t)) {
            packed = with_packed(plain);
            layouts.push_back(&packed);
          }
          for (const TestMatrix* m : layouts)
          for (int64_t n : token_counts) {
            const auto x = random_vector(size_t(n * cols + 1), ++seed);
            for (int threads : {1, 3}) {
              set_num_threads(threads);
              for (QuantDot mode : {QuantDot::Q8Activations, QuantDot::DecodeToFloat}) {
                if (mode == QuantDot::DecodeToFloat && !is_quantized(t)) continue;
                set_quant_dot(mode);
                expect_matches_reference(
                    m->ref, x.data() + 1, n,
                    target.name + " " + std::string(dtype_name(t)) + (m->ref.packed ? " packed" : "") + " [" +
                        std::to_string(rows) + ", " + std::to_string(cols) + "] n=" + std::to_string(n) +
                        " threads=" + std::to_string(threads) +
                        (mode == QuantDot::DecodeToFloat ? " decode-to-float" : ""));
              }
            }
          }
        }
      }
    }
  }
}

TEST_F(KernelTest, ResultsAreBitIdenticalForEveryThreadCount) {
  // Large enough for several chunks per thread in both the vector kernels and
  // the SGEMM path, with a ragged last chunk.
  for (DType t : kAllTypes)
  for (bool pack : {false, true}) {
    if (pack && !packable(t)) continue;
    const TestMatrix m = pack ? with_packed(random_matrix(t, 1003, 320, 0, 7)) : random_matrix(t, 1003, 320, 0, 7);
    for (int64_t n : {int64_t(1), int64_t(2), kGemmMinRows + 5})
    for (QuantDot mode : {QuantDot::Q8Activations, QuantDot::DecodeToFloat}) {
      set_quant_dot(mode);
      const auto x = random_vector(size_t(n * 320), 8);
      std::vector<float> first;
      for (int threads = 1; threads <= 4; ++threads) {
        set_num_threads(threads);
        std::vector<float> y(size_t(n * 1003));
        matmul(m.ref, x.data(), n, y.data());
        if (threads == 1) {
          first = y;
          continue;
        }
        EXPECT_EQ(std::memcmp(first.data(), y.data(), y.size() * sizeof(float)), 0)
            << dtype_name(t) << (pack ? " packed" : "") << " n=" << n << " mode " << int(mode) << ": " << threads << " threads differ from 1";
      }
    }
  }
}

TEST_F(KernelTest, MatRowDecodesExactlyOnEveryTarget) {
  for (const SimdTarget& target : simd_targets()) {
    set_simd_target(target.id);
    for (DType t : kAllTypes) {
      const TestMatrix m = random_matrix(t, 3, 96, 1, 11);
      std::vector<float> fast(96), exact(96);
      for (int64_t r = 0; r < 3; ++r) {
        mat_row(m.ref, r, fast.data());
        convert_to_f32(t, static_cast<const uint8_t*>(m.ref.data) + size_t(r) * m.ref.row_bytes(), exact.data(), 96);
        EXPECT_EQ(std::memcmp(fast.data(), exact.data(), sizeof(float) * 96), 0)
            << target.name << " " << dtype_name(t) << " row " << r;
      }
    }
  }
}

TEST_F(KernelTest, VectorAndMatrixCallsAgree) {
  // matvec is matmul with one row; matmul above kGemmMinRows takes the SGEMM
  // path, whose rows must equal separate products up to summation order (and
  // the int8 activation rounding of matvec on quantized weights).
  for (DType t : kAllTypes) {
    const TestMatrix m = random_matrix(t, 40, 96, 0, 21);
    const int64_t n = kGemmMinRows + 2;
    const auto x = random_vector(size_t(n * 96), 22);
    std::vector<float> batched(size_t(n * 40)), single(40);
    matmul(m.ref, x.data(), n, batched.data());
    const auto bound = error_bounds(m.ref, x.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      matvec(m.ref, x.data() + i * 96, single.data());
      const auto single_bound = error_bounds(m.ref, x.data() + i * 96, 1);
      for (int64_t r = 0; r < 40; ++r)
        EXPECT_NEAR(single[size_t(r)], batched[size_t(i * 40 + r)], bound[size_t(i * 40 + r)] + single_bound[size_t(r)])
            << dtype_name(t) << " token " << i << " row " << r;
    }
  }
}

TEST_F(KernelTest, PackedRowsAreIdenticalForEveryBatchSizeAndTarget) {
  // The int8 kernels on packed weights compute each (row, token) output with
  // the same integer block sums and the same fused multiply-adds whatever the
  // batch size (batched decoding = single sequences, bit for bit) and on every
  // instruction set (VNNI, AVX2 and the portable loop).
  for (DType t : kAllTypes) {
    if (!packable(t)) continue;
    const TestMatrix m = with_packed(random_matrix(t, 45, 160, 1, 31));
    const int64_t n = 21;
    const auto x = random_vector(size_t(n * 160), 32);
    std::vector<float> first;
    for (const SimdTarget& target : simd_targets()) {
      set_simd_target(target.id);
      std::vector<float> batched(size_t(n * 45)), single(45);
      matmul(m.ref, x.data(), n, batched.data());
      for (int64_t i = 0; i < n; ++i) {
        matvec(m.ref, x.data() + i * 160, single.data());
        EXPECT_EQ(std::memcmp(single.data(), batched.data() + i * 45, sizeof(float) * 45), 0)
            << target.name << " " << dtype_name(t) << " token " << i;
      }
      if (first.empty()) first = batched;
      EXPECT_EQ(std::memcmp(first.data(), batched.data(), sizeof(float) * batched.size()), 0)
          << target.name << " " << dtype_name(t) << " differs from " << simd_targets().front().name;
    }
  }
}

TEST_F(KernelTest, FloatBatchesBelowTheGemmSizeEqualSingleRowsBitForBit) {
  // Batched decoding (B < kGemmMinRows sequences) must give each sequence the
  // logits it gets alone: the row-at-a-time kernel for one row of X and the
  // grouped, paired kernel for several sum every output the same way.
  for (const SimdTarget& target : simd_targets()) {
    set_simd_target(target.id);
    for (DType t : {DType::F32, DType::F16, DType::BF16})
      for (int64_t cols : {int64_t(7), int64_t(64), int64_t(100)}) {
        const TestMatrix m = random_matrix(t, 13, cols, dtype_size(t), 51);
        for (int64_t n : {int64_t(2), int64_t(3), int64_t(5), kGemmMinRows - 1}) {
          const auto x = random_vector(size_t(n * cols), 52);
          std::vector<float> batched(size_t(n * 13)), single(13);
          matmul(m.ref, x.data(), n, batched.data());
          for (int64_t i = 0; i < n; ++i) {
            matvec(m.ref, x.data() + i * cols, single.data());
            EXPECT_EQ(std::memcmp(single.data(), batched.data() + i * 13, sizeof(float) * 13), 0)
                << target.name << " " << dtype_name(t) << " cols " << cols << " n=" << n << " row " << i;
          }
        }
      }
  }
}

TEST_F(KernelTest, PackingKeepsTheSizeAndRefusesOtherTypes) {
  const TestMatrix m = random_matrix(DType::Q4_0, 16, 64, 0, 41);
  EXPECT_EQ(packed_bytes(m.ref), m.ref.bytes());
  EXPECT_EQ(packed_bytes(random_matrix(DType::Q8_0, 13, 64, 0, 42).ref), size_t(2 * 544));  // 13 rows -> one group of 16, 2 blocks
  EXPECT_FALSE(packable(DType::Q5_0));
  EXPECT_FALSE(packable(DType::F16));
  EXPECT_THROW(pack_matrix(random_matrix(DType::F16, 8, 64, 0, 43).ref), Error);
}

TEST_F(KernelTest, ReluSquareMatchesTheScalarFormulaOnEveryTarget) {
  for (const SimdTarget& target : simd_targets()) {
    set_simd_target(target.id);
    for (int64_t n : {0, 1, 7, 16, 33, 1000}) {
      auto x = random_vector(size_t(n) + 1, uint32_t(n) + 5);
      x[0] = -0.0f;
      std::vector<float> expected(x.size());
      for (size_t i = 0; i < x.size(); ++i) expected[i] = x[i] > 0.0f ? x[i] * x[i] : 0.0f;
      relu_square(x.data() + 1, n);  // unaligned
      for (int64_t i = 1; i <= n; ++i)
        ASSERT_EQ(x[size_t(i)], expected[size_t(i)]) << target.name << " n=" << n << " i=" << i;
    }
  }
}

TEST_F(KernelTest, QuantizedMatricesNeedWholeBlocks) {
  std::vector<uint8_t> data(1024);
  std::vector<float> x(40), y(2);
  EXPECT_THROW(matvec(MatRef{DType::Q4_0, 2, 40, data.data()}, x.data(), y.data()), Error);
}

// ------------------------------------------------------------------ thread pool

TEST_F(KernelTest, ParallelForRunsEveryIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 7, 64, 1001}) {
      for (int64_t chunk : {1, 3, 64, 2000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, chunk, [&](int64_t b, int64_t e) {
          EXPECT_LE(e - b, chunk);
          EXPECT_EQ(b % chunk, 0);
          for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << n << " " << chunk << " " << i;
      }
    }
  }
}

TEST_F(KernelTest, ThreadPoolSurvivesManyShortJobs) {
  // Decoding issues hundreds of short jobs per token; interleave them with
  // pauses long enough for the workers to go to sleep and be woken.
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  for (int round = 0; round < 2000; ++round) {
    pool.parallel_for(16, 1, [&](int64_t b, int64_t e) { total += e - b; });
    if (round % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(total.load(), 2000 * 16);
}

TEST_F(KernelTest, NestedAndConcurrentCallsRunSerially) {
  ThreadPool pool(3);
  std::atomic<int64_t> inner{0};
  pool.parallel_for(8, 1, [&](int64_t, int64_t) {
    pool.parallel_for(10, 2, [&](int64_t b, int64_t e) { inner += e - b; });
  });
  EXPECT_EQ(inner.load(), 80);

  std::atomic<int64_t> sum{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) pool.parallel_for(100, 7, [&](int64_t b, int64_t e) { sum += e - b; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(sum.load(), 3 * 200 * 100);
}

TEST_F(KernelTest, ThreadCountIsProcessWide) {
  set_num_threads(3);
  EXPECT_EQ(num_threads(), 3);
  EXPECT_EQ(thread_pool().size(), 3);
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  EXPECT_THROW(set_num_threads(0), Error);
  EXPECT_EQ(num_threads(), 1);
}

// ------------------------------------------------------------------ rwkv bench

TEST(BenchCommand, JsonHasTheScriptedFieldsWithConsistentValues) {
  const std::string model = test::tiny_model("7v0-834K", "FP16");
  const auto r = test::run_cli("bench -m " + model + " --prompt 20 --gen 6 --context 600 --threads 2 --json "
                               "--bandwidth-mib 64", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  for (const char* key : {"prefill_tokens_per_s", "decode_tokens_per_s", "batch", "threads", "weight_bytes_per_token",
                          "peak_rss_bytes", "bandwidth_bytes_per_s", "bandwidth_fraction"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["threads"], 2);
  EXPECT_EQ(j["batch"], 1);
  EXPECT_GT(j["prefill_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["decode_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["decode_tokens_per_s_after_context"].get<double>(), 0);
  EXPECT_GT(j["bandwidth_bytes_per_s"].get<double>(), 1e8);
  EXPECT_NEAR(j["bandwidth_fraction"].get<double>(),
              j["weight_bytes_per_token"].get<double>() * j["decode_tokens_per_s"].get<double>() /
                  j["bandwidth_bytes_per_s"].get<double>(),
              1e-9);
  // Every tensor but the embedding, of which one row: computed independently here.
  const TensorArchive archive = read_rwkvcpp(model);
  size_t expected = 0;
  for (const TensorInfo& t : archive.tensors()) expected += t.name == "emb.weight" ? t.nbytes / 256 : t.nbytes;
  EXPECT_EQ(j["weight_bytes_per_token"].get<size_t>(), expected);
  EXPECT_GT(j["peak_rss_bytes"].get<double>(), double(expected));
  // Prefill against the FMA peak: two FLOPs per weight of every matrix but
  // the vocabulary-sized ones (embedding, head), computed independently here.
  double flops = 0;
  for (const TensorInfo& t : archive.tensors()) {
    int64_t big_dims = 0;
    for (int64_t d : t.shape) big_dims += d > 1;
    if (big_dims >= 2 && t.shape[0] != 256) flops += 2.0 * double(t.numel());
  }
  EXPECT_GT(j["fma_peak_flops_per_s"].get<double>(), 1e9);
  EXPECT_NEAR(j["prefill_flops_per_s"].get<double>(), flops * j["prefill_tokens_per_s"].get<double>(),
              1e-6 * j["prefill_flops_per_s"].get<double>());
  EXPECT_NEAR(j["prefill_fma_fraction"].get<double>(),
              j["prefill_flops_per_s"].get<double>() / j["fma_peak_flops_per_s"].get<double>(), 1e-9);
  EXPECT_TRUE(j.contains("blas"));
  // The state has a fixed size: feeding 600 tokens must not grow memory.
  EXPECT_LE(j["rss_bytes_after_context"].get<double>(),
            j["rss_bytes_after_512_context_tokens"].get<double>() + 1e6);
}

TEST(BenchCommand, TextReportAndBadArguments) {
  const auto r = test::run_cli("bench -m " + test::tiny_model("7v0-834K", "Q5_1") + " --prompt 4 --gen 2 "
                               "--bandwidth-mib 0 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* needle : {"prefill:", "decode:", "weights:", "peak RSS:", "q5_1", "1 threads"})
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle << " in " << r.output;
  EXPECT_EQ(r.output.find("bandwidth:"), std::string::npos) << r.output;
  const auto bad = test::run_cli("bench -m " + test::tiny_model("7v0-834K", "FP16") + " --gen 0");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("--gen"), std::string::npos) << bad.output;
}

TEST(BenchCommand, BatchDecodesSeveralSequencesTogether) {
  const std::string model = test::tiny_model("7v0-834K", "Q5_1");
  const auto r = test::run_cli("bench -m " + model + " --prompt 8 --gen 4 --batch 5 --threads 1 --json "
                               "--bandwidth-mib 16", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["batch"], 5);
  EXPECT_GT(j["decode_tokens_per_s"].get<double>(), 0);
  // The weights are read once per step of 5 tokens.
  EXPECT_NEAR(j["achieved_bytes_per_s"].get<double>(),
              j["weight_bytes_per_token"].get<double>() * j["decode_tokens_per_s"].get<double>() / 5, 1e-6 *
              j["achieved_bytes_per_s"].get<double>());
  const auto text = test::run_cli("bench -m " + model + " --prompt 4 --gen 2 --batch 3 --bandwidth-mib 0");
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("batch 3"), std::string::npos) << text.output;
  for (const char* bad : {"0", "-2"}) {
    const auto b = test::run_cli("bench -m " + model + " --batch " + bad);
    EXPECT_EQ(b.exit_code, 1) << b.output;
    EXPECT_NE(b.output.find("--batch"), std::string::npos) << b.output;
  }
}

}  // namespace
}  // namespace rwkv
