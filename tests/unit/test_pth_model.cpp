// Official-layout .pth checkpoints (made with real torch.save by
// tests/reference/fixtures_rwkv7.py) give the same logits as rwkv.cpp's file
// of the same weights, and match the independent float64 reference at every
// position in RNN and sequence mode.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "formats/npy.h"
#include "model/loader.h"
#include "test_model_util.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::chunked_logits;
using test::read_tokens;
using test::stddev;

using test::fixture_path;
using test::max_abs_diff;

TEST(PthModel, SameWeightsAsRwkvCppFileGiveTheSameLogits) {
  const std::vector<int32_t> tokens = {'"', 'i', 'n', ' ', 't', 'h', 'e'};
  for (const auto& [pth, bin] : {std::pair{"fp32", "FP32"}, std::pair{"fp16", "FP16"}}) {
    SCOPED_TRACE(pth);
    const auto from_pth = load_model(fixture_path(std::string("rwkv7/tiny-7v0-") + pth + ".pth"));
    const auto from_bin = load_model(test::tiny_model("7v0-834K", bin));
    EXPECT_EQ(from_pth->config().file_format, "pth");
    EXPECT_EQ(from_pth->config().n_params, from_bin->config().n_params);
    for (int64_t chunk : {1, 7}) {
      // Identical weights and identical arithmetic: equal to float32 rounding.
      EXPECT_LE(max_abs_diff(chunked_logits(*from_pth, tokens, chunk), chunked_logits(*from_bin, tokens, chunk)), 1e-6f);
    }
  }
}

TEST(PthModel, Bf16TinyModelLoadsAndMatchesRwkvCppClosely) {
  const auto model = load_model(fixture_path("rwkv7/tiny-7v0-bf16.pth"));
  EXPECT_EQ(model->config().dtype, DType::BF16);
  const auto expected = test::read_f32_file(test::shared_path("models/rwkvcpp-tiny/expected-logits-7v0-834K.bin"));
  State state = model->new_state();
  std::vector<float> logits(256);
  const std::vector<int32_t> prompt = {'"', 'i', 'n'};
  model->forward(prompt, state, Logits::Last, logits);
  // bf16 keeps 8 bits of mantissa: the weights move by up to 2^-9 relative,
  // which moves these logits (std ~0.6) by a few hundredths, not more.
  EXPECT_LE(max_abs_diff(logits, expected), 0.1f);
}

// The engine's float32 results against the float64 reference, normalised by
// the logits' spread. float32 carries ~7 digits; through a few layers the
// engine stays within ~1e-5 of the reference (measured 3e-6 on the shared
// 2-layer model). 1e-4 leaves room for summation-order effects and still
// catches any real mistake, which shows up at 1e-2 or more.
constexpr float kReferenceTolerance = 1e-4f;

class RandomPthModel : public ::testing::TestWithParam<std::string> {};

TEST_P(RandomPthModel, MatchesTheReferenceAtEveryPositionInEveryMode) {
  const std::string base = fixture_path("rwkv7/" + GetParam());
  const auto model = load_model(base + ".pth");
  const auto tokens = read_tokens(base + ".tokens.txt");
  const auto reference = read_npy_f32(base + ".logits.npy");
  ASSERT_EQ(reference.shape, (std::vector<int64_t>{int64_t(tokens.size()), model->config().n_vocab}));
  const float spread = stddev(reference.data);
  ASSERT_GT(spread, 0.1f);  // a degenerate fixture would make the comparison meaningless
  for (int64_t chunk : {int64_t(1), int64_t(7), int64_t(16), int64_t(tokens.size())}) {
    SCOPED_TRACE(chunk);
    EXPECT_LE(max_abs_diff(chunked_logits(*model, tokens, chunk), reference.data) / spread, kReferenceTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RandomPthModel,
                         ::testing::Values("rand-v7-L4-C128-hs32-V512-bf16", "rand-v7-L3-C128-hs64-V1000-bf16"));

TEST(PthModel, SharedBf16ModelAgreesAcrossModes) {
  // The random RWKV-7 that llama.cpp's converter was run on (World vocabulary size).
  const auto model = load_model(test::shared_path("models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.pth"));
  EXPECT_EQ(model->config().n_vocab, 65536);
  EXPECT_EQ(model->config().n_layer, 2);
  EXPECT_EQ(model->config().dtype, DType::BF16);
  const std::vector<int32_t> tokens = {0, 1, 65535, 300, 12345, 7, 7, 7, 42};
  const auto rnn = chunked_logits(*model, tokens, 1);
  EXPECT_LE(max_abs_diff(chunked_logits(*model, tokens, 4), rnn) / stddev(rnn), kReferenceTolerance);
  EXPECT_LE(max_abs_diff(chunked_logits(*model, tokens, 9), rnn) / stddev(rnn), kReferenceTolerance);
}

}  // namespace
}  // namespace rwkv
