// rwkv eval lambada: the LAMBADA last-word benchmark exactly as BlinkDL's
// RWKV-LM (RWKV-v7/rwkv_v7_demo.py) and ChatRWKV (v2/benchmark.py) compute it.
// Each line {"text": ...} is split at its last space into a context and the
// target " " + last word; the model reads [0] + tokens(context) +
// tokens(target) from a fresh state, and
//   perplexity = exp(mean over documents of -sum log p(target tokens)),
//   accuracy   = share of documents whose every target token is the argmax.
// (The perplexity is per document, as the official script reports it; the
// per-token one is given as token_perplexity.)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/error.h"
#include "model/loader.h"
#include "runtime/documents.h"
#include "runtime/scoring.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {
namespace {

constexpr const char* kLambadaFile = "lambada_test.jsonl";

struct EvalOptions {
  std::string model;
  std::string data;  // "": found by find_lambada
  std::string tokenizer;
  int64_t limit = 0;  // 0: every document
  bool json = false;
};

// Where lambada_test.jsonl is looked for without --data: $RWKV_DATA_DIR, then
// data/ folders beside the model and up to two levels above it (the layout of
// shared/models/<set>/<file> next to shared/data/), then data/ and
// ../shared/data/ under the current directory.
std::string find_lambada(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::vector<fs::path> places;
  if (const char* dir = std::getenv("RWKV_DATA_DIR")) places.push_back(fs::path(dir) / kLambadaFile);
  const fs::path model_dir = fs::path(model_path).parent_path();
  for (const char* up : {"data", "../data", "../../data"}) places.push_back(model_dir / up / kLambadaFile);
  places.push_back(fs::path("data") / kLambadaFile);
  places.push_back(fs::path("../shared/data") / kLambadaFile);
  std::string tried;
  for (const fs::path& p : places) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.lexically_normal().string();
    tried += (tried.empty() ? "" : ", ") + p.lexically_normal().string();
  }
  fail("cannot find {} (looked in: {}); pass it with --data", kLambadaFile, tried);
}

int run_lambada(const EvalOptions& o) {
  if (o.limit < 0) fail("--limit must be at least 0 (0: every document)");
  const std::string data = o.data.empty() ? find_lambada(o.model) : o.data;
  if (!data.ends_with(".jsonl")) fail("{}: LAMBADA data must be a .jsonl file of {{\"text\": ...}} lines", data);
  std::vector<std::string> texts = read_documents(data);
  if (texts.empty()) fail("{}: no documents", data);
  if (o.limit > 0 && size_t(o.limit) < texts.size()) texts.resize(size_t(o.limit));

  const auto model = load_model(o.model);
  const auto tokenizer = make_tokenizer(o.tokenizer, model->config().n_vocab, o.model);

  // Python's text.rsplit(' ', 1): the context before the last space and the
  // last word after it; the target is the word with its space.
  struct Item {
    std::vector<int32_t> tokens;  // [0] + context + target
    size_t target_start;
  };
  std::vector<Item> items;
  for (size_t i = 0; i < texts.size(); ++i) {
    const size_t space = texts[i].rfind(' ');
    if (space == std::string::npos)
      fail("{}: document {} has no space to split off its last word", data, i + 1);
    Item item;
    item.tokens.push_back(0);
    const auto context = tokenizer->encode(std::string_view(texts[i]).substr(0, space));
    item.tokens.insert(item.tokens.end(), context.begin(), context.end());
    item.target_start = item.tokens.size();
    const auto target = tokenizer->encode(std::string_view(texts[i]).substr(space));
    item.tokens.insert(item.tokens.end(), target.begin(), target.end());
    items.push_back(std::move(item));
  }

  const auto start = std::chrono::steady_clock::now();
  auto workspace = model->new_workspace();
  ProgressBar bar("lambada");
  double nll = 0.0;
  size_t correct = 0, target_tokens = 0, done = 0;
  for (const Item& item : items) {
    State state = model->new_state();
    double doc_nll = 0.0;
    bool all_greedy = true;
    for (const TokenScore& s : score_tokens(*model, state, item.tokens, item.target_start, workspace.get())) {
      doc_nll += s.nll;
      all_greedy = all_greedy && s.greedy;
      ++target_tokens;
    }
    nll += doc_nll;
    correct += all_greedy ? 1 : 0;
    ++done;
    bar.update(double(done), double(items.size()),
               fmt::format("ppl {:.2f} acc {:.2f}%", std::exp(nll / double(done)), 100.0 * double(correct) / double(done)));
  }
  bar.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const double ppl = std::exp(nll / double(done));
  const double token_ppl = std::exp(nll / double(target_tokens));
  const double accuracy = double(correct) / double(done);
  if (o.json) {
    const nlohmann::json j = {
        {"task", "lambada"},         {"model", o.model},          {"data", data},
        {"tokenizer", tokenizer->name()}, {"documents", done},    {"target_tokens", target_tokens},
        {"perplexity", ppl},         {"token_perplexity", token_ppl}, {"accuracy", accuracy},
        {"correct", correct},        {"seconds", seconds},
    };
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("documents: {}\n", done);
  fmt::print("target_tokens: {}\n", target_tokens);
  fmt::print("perplexity: {:.6f}\n", ppl);
  fmt::print("token_perplexity: {:.6f}\n", token_ppl);
  fmt::print("accuracy: {:.6f}\n", accuracy);
  fmt::print(stderr, "{} documents in {:.2f} s\n", done, seconds);
  return 0;
}

}  // namespace

Runner add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Evaluate a model on a benchmark");
  cmd->require_subcommand(1);
  auto* lambada = cmd->add_subcommand(
      "lambada", "LAMBADA last-word prediction (perplexity and accuracy, as RWKV-LM and ChatRWKV compute them)");
  auto o = std::make_shared<EvalOptions>();
  lambada->add_option("-m,--model", o->model, "Model file")->required();
  lambada->add_option("--data", o->data,
                      "lambada_test.jsonl (default: found in $RWKV_DATA_DIR, data/ folders beside or above the "
                      "model, data/ or ../shared/data/)");
  add_tokenizer_flag(*lambada, o->tokenizer);
  lambada->add_option("--limit", o->limit, "Evaluate only the first N documents (0: all)")->capture_default_str();
  lambada->add_flag("--json", o->json, "Print one JSON object instead of text");
  add_threads_flag(*lambada);
  return [o, lambada] {
    if (lambada->parsed()) return run_lambada(*o);
    fail("eval: unknown benchmark");
  };
}

}  // namespace rwkv::cli
