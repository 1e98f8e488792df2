// rwkv bench: prefill and decode speed of a model on this machine, with the
// memory bandwidth measured in the same run. Decoding one token reads every
// weight once, so bandwidth / (weight bytes per token) is its ceiling; the
// achieved fraction says how close the kernels come. --batch B decodes B
// independent sequences together (Model::forward_batch), one token each per
// step: the weights are read once per step, so tokens/s can grow with B.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/cli/bench_train.h"
#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/thread_pool.h"
#include "formats/open.h"
#include "model/loader.h"

namespace rwkv::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string model;
  int64_t prompt = 512;
  int64_t gen = 128;
  int64_t context = 0;
  int64_t batch = 1;  // sequences decoded together
  bool json = false;
  int64_t bandwidth_mib = 1024;  // 0: skip the measurement
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

size_t peak_rss_bytes() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return size_t(usage.ru_maxrss) * 1024;  // kilobytes on Linux
}

size_t current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * size_t(::sysconf(_SC_PAGESIZE));
}

// Bytes of weights one decoded token reads: every tensor of the file except
// the embedding, of which it reads one row. (Vectors the loader widens to
// f32 are counted at their stored size; they are a tiny fraction.)
size_t weight_bytes_per_token(const TensorArchive& archive, const ModelConfig& c) {
  size_t total = 0;
  bool embedding_seen = false;
  for (const TensorInfo& t : archive.tensors()) {
    const bool embedding = !embedding_seen && t.name.find("emb") != std::string::npos && t.shape.size() == 2 &&
                           t.shape[0] == c.n_vocab && t.shape[1] == c.n_embd;
    if (embedding) {
      embedding_seen = true;
      total += t.nbytes / size_t(c.n_vocab);
    } else {
      total += t.nbytes;
    }
  }
  return total;
}

// Float operations per prompt token in the matrix products (two per weight of
// every matrix but the vocabulary-sized ones: the embedding is a lookup and
// the head runs for the last token only). Element-wise work is left out.
double prefill_flops_per_token(const TensorArchive& archive, const ModelConfig& c) {
  double total = 0;
  for (const TensorInfo& t : archive.tensors()) {
    int64_t dims_over_1 = 0;
    for (int64_t d : t.shape) dims_over_1 += d > 1;
    if (dims_over_1 >= 2 && t.shape[0] != c.n_vocab) total += 2.0 * double(t.numel());
  }
  return total;
}

struct DecodeRun {
  double tokens_per_s = 0;  // summed over the batch
  double ms_p50 = 0, ms_p90 = 0;  // per step (one token for every sequence)
};

// B sequences, each with its state and its last logits, advanced together
// through forward_batch.
struct Batch {
  std::vector<State> states;
  std::vector<float> logits;  // [B, n_vocab]: each sequence's last logits
  std::vector<int32_t> next;  // each sequence's argmax

  Batch(const Model& model, int64_t b)
      : states(size_t(b), model.new_state()), logits(size_t(b * model.config().n_vocab)), next(size_t(b)) {}
  size_t size() const { return states.size(); }

  // Feeds tokens[i] to sequence i and keeps the argmaxes: one forward_batch
  // call for all (decoding), or, for long pieces (prompts), calls of whole
  // sequences up to kMaxTokensPerCall tokens, so that the workspace for a
  // large batch of long prompts stays bounded.
  static constexpr size_t kMaxTokensPerCall = 4096;
  void feed(const Model& model, Workspace& ws, const std::vector<std::vector<int32_t>>& tokens) {
    const size_t n_vocab = size_t(model.config().n_vocab);
    std::vector<BatchItem> items;
    size_t pending = 0;
    for (size_t i = 0; i < size(); ++i) {
      if (!items.empty() && pending + tokens[i].size() > kMaxTokensPerCall) {
        model.forward_batch(items, &ws);
        items.clear();
        pending = 0;
      }
      items.push_back(
          BatchItem{tokens[i], &states[i], Logits::Last, std::span<float>(logits).subspan(i * n_vocab, n_vocab)});
      pending += tokens[i].size();
    }
    model.forward_batch(items, &ws);
    for (size_t i = 0; i < size(); ++i) {
      const float* row = logits.data() + i * n_vocab;
      next[i] = int32_t(std::max_element(row, row + n_vocab) - row);
    }
  }
};

// Decodes n steps: every sequence gets the argmax of its previous logits.
DecodeRun decode(const Model& model, Batch& batch, Workspace& ws, int64_t n) {
  std::vector<double> ms;
  std::vector<std::vector<int32_t>> tokens(batch.size(), std::vector<int32_t>(1));
  const auto start = Clock::now();
  for (int64_t i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    for (size_t b = 0; b < batch.size(); ++b) tokens[b][0] = batch.next[b];
    batch.feed(model, ws, tokens);
    ms.push_back(seconds_since(t0) * 1e3);
  }
  DecodeRun r;
  r.tokens_per_s = double(n) * double(batch.size()) / seconds_since(start);
  std::sort(ms.begin(), ms.end());
  r.ms_p50 = ms[ms.size() / 2];
  r.ms_p90 = ms[std::min(ms.size() - 1, ms.size() * 9 / 10)];
  return r;
}

int run_bench(const BenchOptions& o) {
  if (o.prompt < 1 || o.gen < 1 || o.context < 0)
    fail("--prompt and --gen must be at least 1 and --context at least 0");
  if (o.batch < 1 || o.batch > 4096) fail("--batch must be between 1 and 4096 (got {})", o.batch);
  // One archive for both the model and the byte count: opening the file twice
  // could double the memory (rwkv.cpp files may need aligned copies).
  const auto archive = open_tensor_archive(o.model);
  const auto model = load_model(archive);
  const ModelConfig& c = model->config();
  const size_t weight_bytes = weight_bytes_per_token(*archive, c);
  const int threads = num_threads();

  // Reproducible pseudo-random prompt ids (speed does not depend on them).
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> any_token(0, int32_t(std::min<int64_t>(c.n_vocab, 65530)) - 1);
  auto random_tokens = [&](int64_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& id : t) id = any_token(rng);
    return t;
  };

  auto ws = model->new_workspace();
  {  // Warm-up: page in the weights and size the workspace (a full prompt, as
     // the timed one) before timing, as llama-bench's warm-up run does.
    Batch warm(*model, o.batch);
    std::vector<std::vector<int32_t>> prompts(size_t(o.batch), random_tokens(std::max<int64_t>(o.prompt, 1)));
    warm.feed(*model, *ws, prompts);
    for (auto& p : prompts) p.resize(1);
    warm.feed(*model, *ws, prompts);
  }

  // Prefill: every sequence its own prompt, in as few calls as Batch::feed allows.
  Batch batch(*model, o.batch);
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t b = 0; b < o.batch; ++b) prompts.push_back(random_tokens(o.prompt));
  auto start = Clock::now();
  batch.feed(*model, *ws, prompts);
  const double prefill_s = seconds_since(start);
  const double prefill_tps = double(o.prompt * o.batch) / prefill_s;

  const DecodeRun first = decode(*model, batch, *ws, o.gen);

  // --context: feed K more tokens (to every sequence), then decode again:
  // RWKV's state has a fixed size, so time per token and memory must not
  // grow. Memory is taken after the first 512-token piece (which sizes the
  // workspace) and at the end.
  size_t rss_before_context = 0, rss_after_context = 0;
  double context_s = 0;
  DecodeRun later;
  if (o.context > 0) {
    start = Clock::now();
    for (int64_t done = 0; done < o.context; done += 512) {
      std::vector<std::vector<int32_t>> pieces;
      for (int64_t b = 0; b < o.batch; ++b) pieces.push_back(random_tokens(std::min<int64_t>(512, o.context - done)));
      batch.feed(*model, *ws, pieces);
      if (done == 0) rss_before_context = current_rss_bytes();
    }
    context_s = seconds_since(start);
    later = decode(*model, batch, *ws, o.gen);
    rss_after_context = current_rss_bytes();
  }
  const size_t peak_rss = peak_rss_bytes();  // before the bandwidth buffer

  const double bandwidth = o.bandwidth_mib > 0 ? measure_read_bandwidth(size_t(o.bandwidth_mib) << 20) : 0.0;
  const double fma_peak = o.bandwidth_mib > 0 ? measure_fma_peak() : 0.0;
  const double prefill_flops = prefill_flops_per_token(*archive, c) * prefill_tps;
  const double fma_fraction = fma_peak > 0 ? prefill_flops / fma_peak : 0.0;
  // One decode step reads the weights once for the whole batch.
  const double achieved = double(weight_bytes) * first.tokens_per_s / double(o.batch);
  const double fraction = bandwidth > 0 ? achieved / bandwidth : 0.0;

  if (o.json) {
    nlohmann::json j = {
        {"model", o.model},
        {"version", std::string(arch_name(c.arch))},
        {"dtype", std::string(dtype_name(c.dtype))},
        {"n_layer", c.n_layer},
        {"n_embd", c.n_embd},
        {"n_vocab", c.n_vocab},
        {"simd", current_simd_target().name},
        {"blas", blas_core_name()},
        {"threads", threads},
        {"batch", o.batch},
        {"prompt_tokens", o.prompt},
        {"gen_tokens", o.gen},
        {"prefill_seconds", prefill_s},
        {"prefill_tokens_per_s", prefill_tps},
        {"decode_tokens_per_s", first.tokens_per_s},
        {"decode_ms_per_token_p50", first.ms_p50},
        {"decode_ms_per_token_p90", first.ms_p90},
        {"weight_bytes_per_token", weight_bytes},
        {"achieved_bytes_per_s", achieved},
        {"peak_rss_bytes", peak_rss},
        {"bandwidth_bytes_per_s", bandwidth},
        {"bandwidth_fraction", fraction},
        {"prefill_flops_per_s", prefill_flops},
        {"fma_peak_flops_per_s", fma_peak},
        {"prefill_fma_fraction", fma_fraction},
    };
    if (o.context > 0) {
      j["context_tokens"] = o.context;
      j["context_seconds"] = context_s;
      j["decode_tokens_per_s_after_context"] = later.tokens_per_s;
      j["decode_ms_per_token_p50_after_context"] = later.ms_p50;
      j["rss_bytes_after_512_context_tokens"] = rss_before_context;
      j["rss_bytes_after_context"] = rss_after_context;
    }
    fmt::print("{}\n", j.dump());
    return 0;
  }
  const double mb = 1e6;
  fmt::print("model:     {} (RWKV {}, {} x {}, vocab {}, {})\n", o.model, arch_name(c.arch), c.n_layer, c.n_embd,
             c.n_vocab, dtype_name(c.dtype));
  fmt::print("machine:   {}; {} threads, batch {}\n", cpu_summary(), threads, o.batch);
  fmt::print("prefill:   {} x {} tokens in {:.3f} s = {:.1f} tokens/s\n", o.batch, o.prompt, prefill_s, prefill_tps);
  fmt::print("decode:    {} x {} tokens = {:.2f} tokens/s ({:.2f} ms/step median, {:.2f} p90)\n", o.batch, o.gen,
             first.tokens_per_s, first.ms_p50, first.ms_p90);
  if (o.context > 0) {
    fmt::print("context:   {} more tokens in {:.2f} s; then decode {:.2f} tokens/s ({:.2f} ms/step median)\n",
               o.context, context_s, later.tokens_per_s, later.ms_p50);
    fmt::print("memory:    RSS {:.1f} MB after the first 512 context tokens, {:.1f} MB at the end\n",
               double(rss_before_context) / mb, double(rss_after_context) / mb);
  }
  fmt::print("weights:   {:.1f} MB read per {} -> {:.2f} GB/s while decoding\n", double(weight_bytes) / mb,
             o.batch == 1 ? std::string("token") : fmt::format("step of {} tokens", o.batch), achieved / 1e9);
  if (bandwidth > 0)
    fmt::print("bandwidth: {:.2f} GB/s (streaming read of {} MiB, {} threads) -> {:.0f}% of it achieved\n",
               bandwidth / 1e9, o.bandwidth_mib, threads, 100 * fraction);
  if (fma_peak > 0)
    fmt::print("compute:   prefill {:.1f} GFLOP/s in the matrix products; float32 FMA peak {:.1f} GFLOP/s ({} threads) "
               "-> {:.0f}% of it{}\n",
               prefill_flops / 1e9, fma_peak / 1e9, threads, 100 * fma_fraction,
               is_quantized(c.dtype) ? " (int8 products counted as float ones)" : "");
  fmt::print("peak RSS:  {:.1f} MB\n", double(peak_rss) / mb);
  return 0;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Measure prefill and decode speed, memory, and the machine's bandwidth");
  auto o = std::make_shared<BenchOptions>();
  auto t = std::make_shared<TrainBenchOptions>();
  auto train = std::make_shared<bool>(false);
  cmd->add_option("-m,--model", o->model, "Model file (not with --train)");
  cmd->add_option("--prompt", o->prompt, "Prompt tokens for the prefill measurement")->capture_default_str();
  cmd->add_option("--gen", o->gen, "Tokens to decode one at a time")->capture_default_str();
  cmd->add_option("--context", o->context, "Feed this many more tokens, then measure decoding again")
      ->capture_default_str();
  cmd->add_option("--batch", o->batch,
                  "Sequences decoded together through the batched forward (tokens/s are summed over them)")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print one JSON object instead of text");
  cmd->add_option("--bandwidth-mib", o->bandwidth_mib,
                  "Buffer for the bandwidth measurement, far larger than the caches (0: skip it and the FMA peak)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  add_threads_flag(*cmd);
  cmd->add_flag("--train", *train, "Measure training instead: forward, backward and AdamW of a new RWKV-7 on random tokens");
  cmd->add_option("--n-layer", t->n_layer, "--train: layers")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--n-embd", t->n_embd, "--train: embedding size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--head-size", t->head_size, "--train: head size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--vocab", t->vocab, "--train: vocabulary")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--ctx-len", t->ctx_len, "--train: tokens per sequence")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--train-batch", t->batch, "--train: sequences per step")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--steps", t->steps, "--train: timed steps (after one warm-up step)")->capture_default_str()->check(CLI::PositiveNumber);
  return [o, t, train] {
    if (*train) {
      if (!o->model.empty()) fail("--train measures a new random model; do not give -m");
      t->json = o->json;
      return run_train_bench(*t);
    }
    if (o->model.empty()) fail("bench needs -m MODEL (or --train)");
    return run_bench(*o);
  };
}

}  // namespace rwkv::cli
