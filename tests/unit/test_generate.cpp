// rwkv generate: greedy output equals the argmax path, seeds reproduce runs,
// a run split by a state file equals the run in one go, stop strings, errors.
#include <gtest/gtest.h>

#include <algorithm>

#include "model/loader.h"
#include "runtime/session.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::run_cli;

const std::string kModel = test::tiny_model("7v0-834K", "FP32");
const std::string kNoPenalty = " --presence-penalty 0 --frequency-penalty 0 ";

// stdout only: generate's statistics go to stderr.
std::string generated_text(const std::string& args) {
  const auto r = run_cli(args, /*stdout_only=*/true);
  EXPECT_EQ(r.exit_code, 0) << args;
  return r.output;
}

TEST(Generate, GreedyOutputIsTheArgmaxPath) {
  const auto model = load_model(kModel);
  State state = model->new_state();
  std::vector<float> logits(256);
  std::vector<int32_t> tokens = {'T', 'h', 'e', ' '};
  model->forward(tokens, state, Logits::Last, logits);
  std::string expected;
  for (int i = 0; i < 40; ++i) {
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    expected += char(next);
    const int32_t one[1] = {next};
    model->forward(one, state, Logits::Last, logits);
  }
  EXPECT_EQ(generated_text("generate -m " + kModel + " -p 'The ' -n 40 --temperature 0" + kNoPenalty), expected);
}

TEST(Generate, EchoPrintsThePromptFirst) {
  const std::string plain = generated_text("generate -m " + kModel + " -p 'The ' -n 10 --temperature 0");
  EXPECT_EQ(generated_text("generate -m " + kModel + " -p 'The ' -n 10 --temperature 0 --echo"), "The " + plain);
}

TEST(Generate, ASeedReproducesASampledRun) {
  const std::string args = "generate -m " + kModel + " -p 'Once' -n 60 --top-p 1 --seed ";
  const std::string a = generated_text(args + "7"), b = generated_text(args + "7"), c = generated_text(args + "8");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Generate, SplitRunThroughAStateFileEqualsOneRun) {
  test::TempDir dir;
  const std::string base = "generate -m " + kModel + " --top-p 0.9 --presence-penalty 0.5 --frequency-penalty 0.3 ";
  const std::string whole = generated_text(base + "-p 'Hello' -n 40 --seed 3");
  const std::string first = generated_text(base + "-p 'Hello' -n 20 --seed 3 --state-out " + (dir / "s.state"));
  // The seed of the second half is irrelevant: the generator's state is in the file.
  const std::string second = generated_text(base + "-p '' -n 20 --seed 99 --state-in " + (dir / "s.state"));
  EXPECT_EQ(first + second, whole);
}

TEST(Generate, StopStringEndsGenerationAndIsNotPrinted) {
  const std::string free_run = generated_text("generate -m " + kModel + " -p 'The ' -n 60 --temperature 0");
  ASSERT_GE(free_run.size(), 12u);
  const std::string stop = free_run.substr(8, 3);
  const std::string stopped =
      generated_text("generate -m " + kModel + " -p 'The ' -n 60 --temperature 0 --stop '" + stop + "'");
  EXPECT_EQ(stopped, free_run.substr(0, free_run.find(stop)));
}

TEST(Generate, SessionCountsOnlyNewTokens) {
  const auto model = load_model(kModel);
  Session session(*model, {.temperature = 0.0f});
  const std::vector<int32_t> prompt = {'a', 'b', 'c'};
  session.feed(prompt);
  EXPECT_EQ(session.tokens_fed(), 3);
  session.accept(session.sample());
  EXPECT_EQ(session.tokens_fed(), 4);
}

TEST(GenerateErrors, BadInputGetsAClearError) {
  struct Case {
    std::string args, needle;
  } cases[] = {
      {"generate -m " + kModel + " -p 'x' -n 0", "-n must be a positive"},
      {"generate -m " + kModel + " -p 'x' -n -3", "-n must be a positive"},
      {"generate -m " + kModel + " -p ''", "prompt is empty"},
      {"generate -m " + kModel + " -p \"$(printf 'a\\377b')\"", "not valid UTF-8"},
      {"generate -m " + kModel + " -p x --top-p 0", "top-p"},
      {"generate -m " + kModel + " -p x --temperature -1", "temperature"},
      {"generate -m " + kModel + " -p x --ban 300", "banned token 300"},
      {"generate -m " + kModel + " -p x --logit-bias 5", "ID=BIAS"},
      {"generate -m " + kModel + " -p x --stop-token 999", "outside the vocabulary"},
      {"generate -m /nonexistent.bin -p x", "cannot open"},
      {"generate -m " + kModel + " -p x --tokenizer world", "vocabulary"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
  }
  const auto r = run_cli("generate -m " + kModel + " -p x --no-such-flag");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128);
}

}  // namespace
}  // namespace rwkv
