// Block-quantized GGUF files (ggml types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1): read
// without copying, their matrices kept quantized through the layout mapping
// (RWKV-6's rescaled matrices by their block scales), and logits equal to
// the float64 reference of the dequantized-float model
// (tests/reference/fixtures_gguf_quant.py decodes the blocks on its own).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <numeric>

#include "core/error.h"
#include "core/kernels.h"
#include "core/quant.h"
#include "formats/gguf.h"
#include "formats/npy.h"
#include "model/layouts.h"
#include "model/loader.h"
#include "test_model_util.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::chunked_logits;
using test::read_tokens;

using test::fixture_path;

const char* const kTypes[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"};

struct Errors {
  double max_abs_over_std, normalised;  // normalised: ||a - b|| / ||b - mean(b)||
};

Errors compare(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  const double mean = std::accumulate(b.begin(), b.end(), 0.0) / double(b.size());
  double diff = 0, spread = 0, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - b[i];
    diff += d * d;
    spread += (b[i] - mean) * (b[i] - mean);
    max_abs = std::max(max_abs, std::fabs(d));
  }
  return {max_abs / std::sqrt(spread / double(b.size())), std::sqrt(diff / spread)};
}

struct RestoreQuantDot {
  ~RestoreQuantDot() { set_quant_dot(QuantDot::Q8Activations); }
};

// Decoding the blocks to float inside the kernels, the engine computes the
// dequantized model in float32: the same 1e-4-of-std tolerance as every
// float model against the float64 reference (measured 1e-6 to 5e-6).
constexpr double kDecodedTolerance = 1e-4;

// With int8 activations (the default, as ggml computes) each quantized
// product also rounds its input to a step of amax/127 per block of 32: an
// error of RMS step/sqrt(12), and amax <= sqrt(32) * RMS, so at most a
// relative sqrt(32) / (127 sqrt(12)) = 1.3% per product. M products in a row
// with independent errors add up to sqrt(M) times that. M counts the
// matrices llama-quantize quantizes (the LoRAs stay float) and the head.
// Measured 1.2% to 1.7%, against bounds of 4.6% (RWKV-7, M = 13) and 7.4%
// (RWKV-6, M = 33); a wrong block layout gives errors of order 1.
double int8_activation_bound(const ModelConfig& c) {
  const int64_t per_layer = c.arch == Arch::V7 ? 6 : 8;  // r k v o + ffn k v; v6 adds gate and ffn r
  const double per_product = std::sqrt(32.0) / (127 * std::sqrt(12.0));
  return std::sqrt(double(c.n_layer * per_layer + 1)) * per_product;
}

class QuantizedGguf : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantizedGguf, MatchesTheDequantizedFloatModelInRnnAndSequenceMode) {
  RestoreQuantDot restore;
  for (const char* type : kTypes) {
    SCOPED_TRACE(type);
    const std::string base = fixture_path("gguf-quant/" + GetParam());
    const auto model = load_model(base + "-" + type + ".gguf");
    EXPECT_EQ(model->config().file_format, "gguf");
    EXPECT_EQ(dtype_name(model->config().dtype), type);
    const auto tokens = read_tokens(base + ".tokens.txt");
    const auto reference = read_npy_f32(base + "-" + type + ".logits.npy");
    ASSERT_EQ(reference.shape, (std::vector<int64_t>{int64_t(tokens.size()), model->config().n_vocab}));
    for (int64_t chunk : {int64_t(1), int64_t(3), int64_t(tokens.size())}) {
      SCOPED_TRACE(chunk);
      set_quant_dot(QuantDot::DecodeToFloat);
      const Errors decoded = compare(chunked_logits(*model, tokens, chunk), reference.data);
      EXPECT_LE(decoded.max_abs_over_std, kDecodedTolerance);
      set_quant_dot(QuantDot::Q8Activations);
      const Errors int8 = compare(chunked_logits(*model, tokens, chunk), reference.data);
      EXPECT_LE(int8.normalised, int8_activation_bound(model->config()));
      if (chunk == 1)
        std::cout << "[ measured ] " << GetParam() << " " << type << ": decoded max abs / std "
                  << decoded.max_abs_over_std << ", int8 activations normalised " << int8.normalised << "\n";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantizedGguf, ::testing::Values("rand-v7", "rand-v6"),
                         [](const auto& info) { return info.param == "rand-v7" ? "Rwkv7" : "Rwkv6"; });

TEST(QuantizedGguf, BlocksAreReadInPlaceAndAreGgmlsRounding) {
  // The fixture's quantizer claims ggml's reference rounding: our quantizer
  // (byte-identical to ggml's, see test_quant.cpp) must write the same blocks
  // from the source file's values.
  const TensorArchive source = read_gguf(test::shared_path("models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.gguf"));
  for (const char* type : kTypes) {
    SCOPED_TRACE(type);
    const TensorArchive quant = read_gguf(fixture_path(std::string("gguf-quant/rand-v7-") + type + ".gguf"));
    int quantized = 0;
    for (const TensorInfo& q : quant.tensors()) {
      const TensorInfo* s = source.find(q.name);
      ASSERT_NE(s, nullptr) << q.name;
      EXPECT_EQ(q.shape, s->shape) << q.name;
      if (!is_quantized(q.dtype)) continue;
      ++quantized;
      EXPECT_EQ(dtype_name(q.dtype), type) << q.name;
      EXPECT_EQ(q.nbytes, dtype_bytes(q.dtype, q.numel())) << q.name;
      std::vector<float> values(size_t(s->numel()));
      convert_to_f32(s->dtype, s->data, values.data(), values.size());
      std::vector<uint8_t> ours(q.nbytes);
      quantize_row(q.dtype, values.data(), ours.data(), s->numel());
      EXPECT_EQ(std::memcmp(ours.data(), q.data, q.nbytes), 0) << q.name;
    }
    // llama-quantize's choice: token_embd, output, and per layer receptance,
    // key, value, output and the two FFN matrices.
    EXPECT_EQ(quantized, 2 + 2 * 6);
    EXPECT_EQ(quant.find("blk.0.time_mix_w1.weight")->dtype, DType::F32);
  }
}

TEST(QuantizedGguf, MatricesStayQuantizedThroughTheLayoutMapping) {
  for (const char* type : kTypes) {
    SCOPED_TRACE(type);
    auto source = std::make_shared<TensorArchive>(read_gguf(fixture_path(std::string("gguf-quant/rand-v6-") + type + ".gguf")));
    const auto official = to_official_layout(source);
    // Unchanged matrices are views of the file's blocks.
    const TensorInfo* key = official->find("blocks.1.att.key.weight");
    ASSERT_NE(key, nullptr);
    EXPECT_EQ(dtype_name(key->dtype), type);
    EXPECT_EQ(key->data, source->find("blk.1.time_mix_key.weight")->data);
    // Layer 3's output and FFN value were stored divided by 2^(3 / 2) = 2; the
    // mapping doubles their block scales, so they decode to exactly twice the
    // stored values.
    for (const auto& [ours, theirs] : {std::pair{"blocks.3.att.output.weight", "blk.3.time_mix_output.weight"},
                                       std::pair{"blocks.3.ffn.value.weight", "blk.3.channel_mix_value.weight"}}) {
      const TensorInfo* o = official->find(ours);
      const TensorInfo* t = source->find(theirs);
      ASSERT_NE(o, nullptr);
      EXPECT_EQ(dtype_name(o->dtype), type);
      std::vector<float> a(size_t(o->numel())), b(size_t(t->numel()));
      convert_to_f32(o->dtype, o->data, a.data(), a.size());
      convert_to_f32(t->dtype, t->data, b.data(), b.size());
      for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], 2 * b[i]) << ours << " " << i;
    }
    const auto r = test::run_cli("info -m " + fixture_path(std::string("gguf-quant/rand-v6-") + type + ".gguf"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(std::string("dtype: ") + type), std::string::npos) << r.output;
  }
}

TEST(QuantizedGguf, BadBlockTensorsAreClearErrors) {
  test::TempDir dir;
  auto bytes = test::read_bytes(fixture_path("gguf-quant/rand-v7-q8_0.gguf"));
  // Cut into the data section: the last tensor's blocks lie outside the file.
  test::write_bytes(dir / "cut.gguf", std::vector<char>(bytes.begin(), bytes.end() - 100));
  try {
    load_model(dir / "cut.gguf");
    ADD_FAILURE() << "truncated file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkv
