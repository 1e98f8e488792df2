// rwkv perplexity and rwkv eval lambada: their numbers equal the same
// quantities computed here independently (log-softmax in double of the
// logits that `rwkv logits --all-positions` writes, or that the library
// gives), for plain text, JSONL documents, --ctx-len windows and LAMBADA's
// context/target split; bad input is refused.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "formats/npy.h"
#include "model/loader.h"
#include "runtime/scoring.h"
#include "test_util.h"

namespace rwkv {
namespace {

const std::string kModel = test::tiny_model("7v0-834K", "FP32");

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// -log softmax(row)[target] in long double, written out here on purpose
// (not the library's score_logits).
double nll_of(const float* row, int64_t n_vocab, int32_t target) {
  long double max = row[0];
  for (int64_t i = 1; i < n_vocab; ++i) max = std::max<long double>(max, row[i]);
  long double sum = 0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<long double>(row[i]) - max);
  return double(max + std::log(sum) - row[target]);
}

bool is_argmax(const float* row, int64_t n_vocab, int32_t target) {
  for (int64_t i = 0; i < n_vocab; ++i)
    if (row[i] > row[target] || (row[i] == row[target] && i < target)) return false;
  return true;
}

std::vector<int32_t> byte_ids(const std::string& text) {
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string id_list(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

// All-position logits of `ids` from a fresh state, through the CLI.
std::vector<float> cli_logits(const test::TempDir& dir, const std::vector<int32_t>& ids) {
  const std::string out = dir / "logits.npy";
  const auto r = test::run_cli("logits -m " + kModel + " --tokens " + id_list(ids) + " --all-positions -o " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return read_npy_f32(out).data;
}

nlohmann::json run_json(const std::string& args) {
  const auto r = test::run_cli(args + " --json", true);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output);
}

TEST(Perplexity, PlainTextEqualsTheLogitsOfTheCommandLine) {
  test::TempDir dir;
  const std::string text = "The quick brown fox jumps over the lazy dog. It was the best of times.";
  write_text(dir / "sample.txt", text);
  const auto j = run_json("perplexity -m " + kModel + " -f " + (dir / "sample.txt") + " --tokenizer bytes");

  std::vector<int32_t> ids = {0};  // the start token RWKV-LM feeds first
  for (int32_t id : byte_ids(text)) ids.push_back(id);
  const auto logits = cli_logits(dir, ids);
  double nll = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) nll += nll_of(&logits[i * 256], 256, ids[i + 1]);
  const double n = double(text.size());
  EXPECT_EQ(j["tokens"], text.size());
  EXPECT_EQ(j["bytes"], text.size());
  EXPECT_EQ(j["documents"], 1);
  EXPECT_NEAR(j["nll"].get<double>(), nll / n, 1e-5);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(nll / n), 1e-5 * std::exp(nll / n));
  EXPECT_NEAR(j["bits_per_byte"].get<double>(), nll / std::log(2.0) / n, 1e-5);
  // The tiny model has learned something: far better than uniform over 256 bytes.
  EXPECT_LT(j["perplexity"].get<double>(), 50.0);

  // The text report carries the same numbers.
  const auto r = test::run_cli("perplexity -m " + kModel + " -f " + (dir / "sample.txt") + " --tokenizer bytes", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("perplexity: " + fmt::format("{:.6f}", j["perplexity"].get<double>())), std::string::npos)
      << r.output;
}

TEST(Perplexity, JsonlDocumentsAndContextWindowsStartFromFreshStates) {
  test::TempDir dir;
  const std::vector<std::string> docs = {"Once upon a time there was a cat.", "", "Hello world, hello again."};
  std::string jsonl;
  for (const auto& d : docs) jsonl += nlohmann::json({{"text", d}}).dump() + "\n\n";
  write_text(dir / "docs.jsonl", jsonl);

  const auto model = load_model(kModel);
  // Library logits of [0] + ids from a fresh state.
  auto logits_of = [&](const std::vector<int32_t>& ids) {
    std::vector<int32_t> seq = {0};
    seq.insert(seq.end(), ids.begin(), ids.end());
    std::vector<float> logits(seq.size() * 256);
    State state = model->new_state();
    model->forward(seq, state, Logits::All, logits);
    return std::pair(seq, logits);
  };
  auto window_nll = [&](const std::vector<int32_t>& ids) {
    const auto [seq, logits] = logits_of(ids);
    double nll = 0;
    for (size_t i = 0; i + 1 < seq.size(); ++i) nll += nll_of(&logits[i * 256], 256, seq[i + 1]);
    return nll;
  };

  double nll = 0, bytes = 0, tokens = 0;
  for (const auto& d : docs) {
    if (d.empty()) continue;
    nll += window_nll(byte_ids(d));
    bytes += double(d.size());
    tokens += double(d.size());
  }
  auto j = run_json("perplexity -m " + kModel + " -f " + (dir / "docs.jsonl") + " --tokenizer bytes --threads 2");
  EXPECT_EQ(j["documents"], 2);
  EXPECT_EQ(j["tokens"].get<double>(), tokens);
  EXPECT_NEAR(j["nll"].get<double>(), nll / tokens, 1e-5);
  EXPECT_NEAR(j["bits_per_byte"].get<double>(), nll / std::log(2.0) / bytes, 1e-5);

  // --ctx-len 7: every window of 7 tokens from a fresh state after token 0.
  double windowed = 0;
  for (const auto& d : docs) {
    const auto ids = byte_ids(d);
    for (size_t at = 0; at < ids.size(); at += 7)
      windowed += window_nll(std::vector<int32_t>(ids.begin() + ptrdiff_t(at),
                                                  ids.begin() + ptrdiff_t(std::min(ids.size(), at + 7))));
  }
  j = run_json("perplexity -m " + kModel + " -f " + (dir / "docs.jsonl") + " --tokenizer bytes --ctx-len 7");
  EXPECT_NEAR(j["nll"].get<double>(), windowed / tokens, 1e-5);
  EXPECT_GT(j["nll"].get<double>(), nll / tokens);  // less context predicts worse
}

TEST(Perplexity, ScoringInChunksEqualsOneCall) {
  const auto model = load_model(kModel);
  std::vector<int32_t> ids = {0};
  for (int32_t id : byte_ids("Chunks carry the state: scores do not depend on where the sequence is cut.")) ids.push_back(id);
  State a = model->new_state(), b = model->new_state();
  const auto whole = score_tokens(*model, a, ids, 1, nullptr, 1000);
  const auto pieces = score_tokens(*model, b, ids, 5, nullptr, 3);  // 3-token chunks, first scores skipped
  ASSERT_EQ(whole.size(), ids.size() - 1);
  ASSERT_EQ(pieces.size(), ids.size() - 5);
  for (size_t i = 0; i < pieces.size(); ++i) {
    EXPECT_NEAR(pieces[i].nll, whole[i + 4].nll, 1e-4) << i;
    EXPECT_EQ(pieces[i].greedy, whole[i + 4].greedy) << i;
  }
  // Both states have read every token.
  EXPECT_LT(test::max_abs_diff(a.data(), b.data()), 1e-4f);
  EXPECT_THROW(score_tokens(*model, a, ids, 0), Error);
  EXPECT_THROW(score_tokens(*model, a, std::vector<int32_t>{0, 300}, 1), Error);
}

TEST(Perplexity, ReferenceModelGivesKlDivergenceAndAgreement) {
  test::TempDir dir;
  const std::string text = "It was a bright cold day in April, and the clocks were striking thirteen.";
  write_text(dir / "sample.txt", text);
  const std::string quant = test::tiny_model("7v0-834K", "Q5_1");
  const auto j = run_json("perplexity -m " + quant + " -f " + (dir / "sample.txt") + " --tokenizer bytes --reference " +
                          kModel);
  // Independently: both models' logits of [0] + bytes, KL(FP32 || Q5_1) per position.
  std::vector<int32_t> ids = {0};
  for (int32_t id : byte_ids(text)) ids.push_back(id);
  const auto p = cli_logits(dir, ids);
  const std::string out = dir / "quant.npy";
  const auto r = test::run_cli("logits -m " + quant + " --tokens " + id_list(ids) + " --all-positions -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto q = read_npy_f32(out).data;
  double kl = 0, ref_nll = 0;
  int agree = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const float* pr = &p[i * 256];
    const float* qr = &q[i * 256];
    int top_p = 0, top_q = 0;
    for (int v = 0; v < 256; ++v) {
      // log p_v - log q_v = (pr_v - lse_p) - (qr_v - lse_q), with -log p_v = nll_of(pr, v)
      const double log_p = -nll_of(pr, 256, v), log_q = -nll_of(qr, 256, v);
      kl += std::exp(log_p) * (log_p - log_q);
      if (pr[v] > pr[top_p]) top_p = v;
      if (qr[v] > qr[top_q]) top_q = v;
    }
    agree += top_p == top_q ? 1 : 0;
    ref_nll += nll_of(pr, 256, ids[i + 1]);
  }
  const double n = double(text.size());
  EXPECT_NEAR(j["kl_divergence"].get<double>(), kl / n, 1e-6 + 1e-4 * kl / n);
  EXPECT_GT(j["kl_divergence"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(j["top1_agreement"].get<double>(), agree / n);
  EXPECT_NEAR(j["reference_nll"].get<double>(), ref_nll / n, 1e-5);
  EXPECT_EQ(j["reference"].get<std::string>(), kModel);
  // A model against itself: no divergence, full agreement, equal perplexity.
  const auto self = run_json("perplexity -m " + kModel + " -f " + (dir / "sample.txt") +
                             " --tokenizer bytes --reference " + kModel);
  EXPECT_LT(self["kl_divergence"].get<double>(), 1e-9);
  EXPECT_EQ(self["top1_agreement"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(self["reference_perplexity"].get<double>(), self["perplexity"].get<double>());
  // Another vocabulary is refused.
  const auto bad = test::run_cli("perplexity -m " + kModel + " -f " + (dir / "sample.txt") +
                                 " --tokenizer bytes --reference " +
                                 test::shared_path("models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.pth"));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("--reference"), std::string::npos) << bad.output;
}

TEST(Perplexity, BadInputIsRefused) {
  test::TempDir dir;
  write_text(dir / "bad.jsonl", "{\"text\": \"fine\"}\nnot json\n");
  write_text(dir / "notext.jsonl", "{\"body\": \"x\"}\n");
  write_text(dir / "empty.txt", "");
  write_text(dir / "ok.txt", "some text");
  const std::string m = "perplexity -m " + kModel + " --tokenizer bytes ";
  struct Case {
    std::string args, needle;
  };
  for (const Case& c : std::vector<Case>{
           {m + "-f " + (dir / "missing.txt"), "cannot open"},
           {m + "-f " + (dir / "bad.jsonl"), "bad.jsonl:2"},
           {m + "-f " + (dir / "notext.jsonl"), "\"text\""},
           {m + "-f " + (dir / "empty.txt"), "no text"},
           {m + "-f " + (dir / "ok.txt") + " --ctx-len -1", "--ctx-len"},
           {"perplexity -m " + kModel + " -f " + (dir / "ok.txt") + " --tokenizer world", "vocabulary"},
       }) {
    const auto r = test::run_cli(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
  }
}

// ------------------------------------------------------------------ LAMBADA

TEST(Lambada, PerplexityAndAccuracyFollowTheOfficialScript) {
  test::TempDir dir;
  // The last one's target is a word the tiny model predicts byte by byte.
  const std::vector<std::string> texts = {"She looked at the dog and said hello to the dog",
                                          "one two three four", "the cat sat on the  mat", "and the the"};
  std::string jsonl;
  for (const auto& t : texts) jsonl += nlohmann::json({{"text", t}}).dump() + "\n";
  write_text(dir / "lambada.jsonl", jsonl);
  const auto j = run_json("eval lambada -m " + kModel + " --data " + (dir / "lambada.jsonl") + " --tokenizer bytes");

  // rwkv_v7_demo.py: src = [0] + encode(context), dst = encode(" " + word);
  // ppl = exp(-sum of per-document log-likelihoods / documents).
  double total = 0, target_tokens = 0;
  int correct = 0;
  for (const auto& t : texts) {
    const size_t space = t.rfind(' ');
    std::vector<int32_t> ids = {0};
    for (int32_t id : byte_ids(t.substr(0, space))) ids.push_back(id);
    const size_t src = ids.size();
    for (int32_t id : byte_ids(t.substr(space))) ids.push_back(id);
    test::TempDir sub;
    const auto logits = cli_logits(sub, ids);
    bool all = true;
    for (size_t i = src; i < ids.size(); ++i) {
      total += nll_of(&logits[(i - 1) * 256], 256, ids[i]);
      all = all && is_argmax(&logits[(i - 1) * 256], 256, ids[i]);
      ++target_tokens;
    }
    correct += all ? 1 : 0;
  }
  const double n = double(texts.size());
  EXPECT_EQ(j["documents"], texts.size());
  EXPECT_EQ(j["target_tokens"].get<double>(), target_tokens);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(total / n), 1e-5 * std::exp(total / n));
  EXPECT_NEAR(j["token_perplexity"].get<double>(), std::exp(total / target_tokens),
              1e-5 * std::exp(total / target_tokens));
  EXPECT_EQ(j["correct"].get<int>(), correct);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), correct / n);
}

TEST(Lambada, RunsOnTheRealDataWithLimit) {
  // Without --data the file is found beside the models (../shared/data).
  const auto j = run_json("eval lambada -m " + kModel + " --tokenizer bytes --limit 20");
  EXPECT_EQ(j["documents"], 20);
  EXPECT_NE(j["data"].get<std::string>().find("lambada_test.jsonl"), std::string::npos);
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  EXPECT_TRUE(std::isfinite(j["perplexity"].get<double>()));
  EXPECT_GE(j["accuracy"].get<double>(), 0.0);
  EXPECT_LE(j["accuracy"].get<double>(), 1.0);
  const auto r = test::run_cli("eval lambada -m " + kModel + " --tokenizer bytes --limit 2", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* key : {"documents: 2", "perplexity:", "accuracy:"})
    EXPECT_NE(r.output.find(key), std::string::npos) << r.output;
}

TEST(Lambada, BadInputIsRefused) {
  test::TempDir dir;
  write_text(dir / "nospace.jsonl", "{\"text\": \"fine text\"}\n{\"text\": \"oneword\"}\n");
  write_text(dir / "broken.jsonl", "{\"text\": \n");
  write_text(dir / "empty.jsonl", "\n");
  write_text(dir / "plain.txt", "a b c");
  const std::string m = "eval lambada -m " + kModel + " --tokenizer bytes ";
  struct Case {
    std::string args, needle;
  };
  for (const Case& c : std::vector<Case>{
           {m + "--data " + (dir / "nospace.jsonl"), "document 2 has no space"},
           {m + "--data " + (dir / "broken.jsonl"), "broken.jsonl:1"},
           {m + "--data " + (dir / "empty.jsonl"), "no documents"},
           {m + "--data " + (dir / "plain.txt"), ".jsonl"},
           {m + "--data " + (dir / "missing.jsonl"), "cannot open"},
           {m + "--limit -3", "--limit"},
           {"eval", "subcommand"},
       }) {
    const auto r = test::run_cli(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace rwkv
