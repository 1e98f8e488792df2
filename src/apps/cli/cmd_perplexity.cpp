// rwkv perplexity: how well a model predicts a text. Every document (a plain
// text file is one; a .jsonl file has one per line) starts from a fresh state
// with token 0 fed first, as RWKV-LM does, so that its first real token is
// predicted too; then every token is scored by the logits after the ones
// before it, in sequence mode, with the state carried between chunks.
// --ctx-len N cuts a document into windows of N scored tokens, each again
// from a fresh state after token 0. --reference MODEL reads the same tokens
// with a second model (e.g. the float one a quantized file was made from)
// and adds its perplexity, the mean KL divergence from its next-token
// distributions to the model's, and how often both rank the same token first.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/loader.h"
#include "runtime/documents.h"
#include "runtime/scoring.h"
#include "runtime/tokenizer.h"

namespace rwkv::cli {
namespace {

struct PerplexityOptions {
  std::string model;
  std::string file;
  std::string tokenizer;
  std::string reference;  // "": no comparison
  int64_t ctx_len = 0;    // 0: a document is one window
  bool json = false;
};

int run_perplexity(const PerplexityOptions& o) {
  if (o.ctx_len < 0) fail("--ctx-len must be at least 0 (0: never reset within a document)");
  const std::vector<std::string> texts = read_documents(o.file);
  const auto model = load_model(o.model);
  const auto tokenizer = make_tokenizer(o.tokenizer, model->config().n_vocab, o.model);
  std::unique_ptr<Model> reference;
  std::unique_ptr<Workspace> ref_workspace;
  if (!o.reference.empty()) {
    reference = load_model(o.reference);
    if (reference->config().n_vocab != model->config().n_vocab)
      fail("--reference: {} has {} logits, {} has {}", o.reference, reference->config().n_vocab, o.model,
           model->config().n_vocab);
    ref_workspace = reference->new_workspace();
  }

  std::vector<std::vector<int32_t>> docs;
  size_t total_tokens = 0, total_bytes = 0;
  for (const std::string& text : texts) {
    if (text.empty()) continue;
    docs.push_back(tokenizer->encode(text));
    total_tokens += docs.back().size();
    total_bytes += text.size();
  }
  if (total_tokens == 0) fail("{}: no text to score", o.file);

  const auto start = std::chrono::steady_clock::now();
  auto workspace = model->new_workspace();
  ProgressBar bar("perplexity");
  double nll = 0.0, ref_nll = 0.0, kl = 0.0;
  size_t scored = 0, same_top = 0;
  std::vector<int32_t> window;
  for (const auto& doc : docs) {
    const size_t span = o.ctx_len > 0 ? size_t(o.ctx_len) : doc.size();
    for (size_t at = 0; at < doc.size(); at += span) {
      const size_t n = std::min(span, doc.size() - at);
      window.assign(1, 0);  // the start token, as RWKV-LM's evaluation feeds it
      window.insert(window.end(), doc.begin() + ptrdiff_t(at), doc.begin() + ptrdiff_t(at + n));
      State state = model->new_state();
      State ref_state = reference ? reference->new_state() : State();
      const ScoreReference ref{reference.get(), &ref_state, ref_workspace.get()};
      const auto scores = score_tokens(*model, state, window, 1, workspace.get(), 0, reference ? &ref : nullptr);
      for (const TokenScore& s : scores) {
        nll += s.nll;
        ref_nll += s.reference_nll;
        kl += s.kl;
        same_top += s.same_top ? 1 : 0;
      }
      scored += n;
      bar.update(double(scored), double(total_tokens), fmt::format("ppl {:.3f}", std::exp(nll / double(scored))));
    }
  }
  bar.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const double mean = nll / double(scored);
  const double ppl = std::exp(mean);
  const double bpb = nll / std::log(2.0) / double(total_bytes);
  const double ref_mean = ref_nll / double(scored), kl_mean = kl / double(scored);
  const double agreement = double(same_top) / double(scored);
  if (o.json) {
    nlohmann::json j = {
        {"model", o.model},           {"file", o.file},          {"tokenizer", tokenizer->name()},
        {"documents", docs.size()},   {"tokens", scored},        {"bytes", total_bytes},
        {"ctx_len", o.ctx_len},       {"nll", mean},             {"perplexity", ppl},
        {"bits_per_byte", bpb},       {"seconds", seconds},      {"tokens_per_s", double(scored) / seconds},
        {"threads", num_threads()},
    };
    if (reference) {
      j["reference"] = o.reference;
      j["reference_nll"] = ref_mean;
      j["reference_perplexity"] = std::exp(ref_mean);
      j["kl_divergence"] = kl_mean;
      j["top1_agreement"] = agreement;
    }
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("documents: {}\n", docs.size());
  fmt::print("tokens: {}\n", scored);
  fmt::print("bytes: {}\n", total_bytes);
  fmt::print("nll: {:.6f}\n", mean);
  fmt::print("perplexity: {:.6f}\n", ppl);
  fmt::print("bits_per_byte: {:.6f}\n", bpb);
  if (reference) {
    fmt::print("reference_nll: {:.6f}\n", ref_mean);
    fmt::print("reference_perplexity: {:.6f}\n", std::exp(ref_mean));
    fmt::print("kl_divergence: {:.6f}\n", kl_mean);
    fmt::print("top1_agreement: {:.6f}\n", agreement);
  }
  fmt::print(stderr, "{} tokens in {:.2f} s ({:.1f} tokens/s)\n", scored, seconds, double(scored) / seconds);
  return 0;
}

}  // namespace

Runner add_perplexity(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "perplexity",
      "Perplexity of a model on a text: plain text (one document) or .jsonl (a {\"text\": ...} object per line)");
  auto o = std::make_shared<PerplexityOptions>();
  cmd->add_option("-m,--model", o->model, "Model file")->required();
  cmd->add_option("-f,--file", o->file, "Text file, or .jsonl with one {\"text\": ...} document per line")
      ->required();
  add_tokenizer_flag(*cmd, o->tokenizer);
  cmd->add_option("--ctx-len", o->ctx_len,
                  "Reset the state every N scored tokens (default 0: only at each document's start)")
      ->capture_default_str();
  cmd->add_option("--reference", o->reference,
                  "Also read the text with this model (e.g. the float original of a quantized MODEL): its "
                  "perplexity, the mean KL divergence from it, top-1 agreement");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of text");
  add_threads_flag(*cmd);
  return [o] { return run_perplexity(*o); };
}

}  // namespace rwkv::cli
