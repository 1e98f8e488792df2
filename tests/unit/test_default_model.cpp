// The model the project trains and ships (models/, see models/README.md): it
// loads, it has learnt its text, and generate/chat use it without -m.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/loader.h"
#include "test_util.h"

namespace rwkv {
namespace {

// Mean cross-entropy (nats per byte) of the model reading `text` from a fresh
// state after token 0, as it was trained.
double nats_per_byte(const Model& model, const std::string& text) {
  std::vector<int32_t> tokens = {0};
  for (unsigned char c : text) tokens.push_back(c);
  const int64_t V = model.config().n_vocab, T = int64_t(tokens.size()) - 1;
  std::vector<float> logits(size_t(T * V));
  State state = model.new_state();
  model.forward(std::span<const int32_t>(tokens.data(), size_t(T)), state, Logits::All, logits);
  double nll = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const float* row = &logits[size_t(t * V)];
    double max = row[0], sum = 0.0;
    for (int64_t v = 1; v < V; ++v) max = std::max(max, double(row[v]));
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - max);
    nll += std::log(sum) + max - double(row[tokens[size_t(t + 1)]]);
  }
  return nll / double(T);
}

TEST(DefaultModel, LoadsAndHasLearntItsText) {
  const auto model = load_model(RWKV_DEFAULT_MODEL);
  EXPECT_EQ(model->config().n_vocab, 256);
  // A verse of the training text (KJV, Genesis 1:3) against a sentence of the
  // same letters in an order no English text has: an untrained model scores
  // both near ln 256 = 5.5; the shipped one knows the first far better.
  const double verse = nats_per_byte(*model, "And God said, Let there be light: and there was light.\n");
  const double noise = nats_per_byte(*model, "dnA doG ,dias teL ereht eb :thgil dna ereht saw .thgil\n");
  EXPECT_LT(verse, 1.5);
  EXPECT_GT(noise, verse + 1.0);
}

TEST(DefaultModel, GenerateAndChatUseItWithoutDashM) {
  const auto r = test::run_cli("generate -p 'And the LORD said' -n 40 --seed 1", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GE(r.output.size(), 20u);
  const auto c = test::run_cli("chat -n 8 --seed 1 < /dev/null");
  EXPECT_EQ(c.exit_code, 0) << c.output;
  EXPECT_EQ(c.output.find("error"), std::string::npos) << c.output;
}

}  // namespace
}  // namespace rwkv
