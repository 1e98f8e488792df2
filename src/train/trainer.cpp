#include "train/trainer.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "core/error.h"
#include "formats/open.h"
#include "formats/pth_writer.h"
#include "runtime/state_file.h"
#include "runtime/tokenizer.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/distributed.h"
#include "train/lora.h"
#include "train/model.h"
#include "train/svg.h"
#include "train/train_state.h"

namespace rwkv::train {
namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) { g_interrupted.store(true); }

// SIGINT ends the run at the next step boundary with a checkpoint, instead of
// losing everything since the last one; the previous handler comes back after.
class SigintGuard {
 public:
  SigintGuard() {
    g_interrupted.store(false);
    previous_ = std::signal(SIGINT, on_sigint);
  }
  ~SigintGuard() { std::signal(SIGINT, previous_); }

 private:
  void (*previous_)(int);
};

std::string duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

void check_options(const TrainOptions& o) {
  if (o.ctx_len <= 0) fail("--ctx-len must be positive (got {})", o.ctx_len);
  if (o.batch <= 0) fail("--batch must be positive (got {})", o.batch);
  if (o.accumulate <= 0) fail("--accumulate must be positive (got {})", o.accumulate);
  if (o.steps <= 0) fail("--steps must be positive (got {})", o.steps);
  if (!(o.optim.lr_init >= 0) || !(o.optim.lr_final >= 0)) fail("learning rates must be non-negative");
  if (o.optim.warmup_steps < 0) fail("--warmup must not be negative");
  if (!(o.optim.beta1 >= 0 && o.optim.beta1 < 1 && o.optim.beta2 >= 0 && o.optim.beta2 < 1))
    fail("Adam betas must be in [0, 1)");
  if (!(o.optim.eps > 0)) fail("--adam-eps must be positive");
  if (!(o.optim.weight_decay >= 0)) fail("--weight-decay must not be negative");
  if (!(o.optim.grad_clip >= 0)) fail("--grad-clip must not be negative (0 disables clipping)");
  if (o.output.empty()) fail("no output file (-o)");
  if (o.val_batches < 0 || o.val_every < 0 || o.save_every < 0 || o.stop_after < 0 || o.log_every < 0)
    fail("step counts must not be negative");
  if (o.save_dtype != DType::F32 && o.save_dtype != DType::BF16) fail("checkpoints are saved as fp32 or bf16");
  if (!o.state_in.empty() && o.mode != TrainMode::State) fail("--state-in is for --mode state");
}

// What must be equal for --resume to continue the same run.
nlohmann::json run_settings(const TrainOptions& o, const TrainConfig& c, const Corpus& corpus,
                            const std::string& tokenizer) {
  return {{"model", c.describe()},
          {"mode", o.mode == TrainMode::Full    ? "full"
                   : o.mode == TrainMode::State ? "state"
                                                : "lora"},
          {"lora_rank", o.mode == TrainMode::Lora ? o.lora_rank : 0},
          {"lora_alpha", o.mode == TrainMode::Lora ? o.lora_alpha : 0.0},
          {"data_hash", fmt::format("{:016x}", corpus.hash)},
          {"tokenizer", tokenizer},
          {"ctx_len", o.ctx_len},
          {"batch", o.batch},
          {"accumulate", o.accumulate},
          {"seed", o.seed},
          {"lr_init", o.optim.lr_init},
          {"lr_final", o.optim.lr_final},
          {"warmup", o.optim.warmup_steps},
          {"schedule", lr_schedule_name(o.optim.schedule)},
          {"beta1", o.optim.beta1},
          {"beta2", o.optim.beta2},
          {"adam_eps", o.optim.eps},
          {"weight_decay", o.optim.weight_decay},
          {"grad_clip", o.optim.grad_clip},
          {"l2wrap", o.l2wrap},
          {"val_fraction", o.val_fraction},
          {"processes", Distributed::get().size()}};
}

// Mean loss over (at most val_batches batches of) ctx_len windows of the
// validation stream; NaN when there is none.
double validate(TrainModel<float>& model, const std::vector<int32_t>& val, const TrainOptions& o) {
  const int64_t n = int64_t(val.size());
  if (n < 2 || o.val_batches == 0) return NAN;
  std::vector<int64_t> starts;
  for (int64_t s = 0; s + 1 < n && int64_t(starts.size()) < o.val_batches * o.batch; s += o.ctx_len)
    starts.push_back(s);
  double sum = 0.0;
  int64_t count = 0;
  std::vector<int32_t> in, tg;
  size_t i = 0;
  while (i < starts.size()) {
    // Full windows go in batches of up to `batch`; a shorter last window alone.
    const int64_t len = std::min(o.ctx_len, n - 1 - starts[i]);
    int64_t b = 0;
    in.clear();
    tg.clear();
    while (i < starts.size() && b < o.batch && std::min(o.ctx_len, n - 1 - starts[i]) == len) {
      in.insert(in.end(), val.begin() + starts[i], val.begin() + starts[i] + len);
      tg.insert(tg.end(), val.begin() + starts[i] + 1, val.begin() + starts[i] + len + 1);
      ++b;
      ++i;
    }
    int64_t c = 0;
    const double mean = model.loss(in, tg, b, len, {}, false, &c);
    sum += mean * double(c);
    count += c;
  }
  return count > 0 ? sum / double(count) : NAN;
}

}  // namespace

TrainMode parse_train_mode(const std::string& name) {
  if (name == "full") return TrainMode::Full;
  if (name == "state") return TrainMode::State;
  if (name == "lora") return TrainMode::Lora;
  fail("unknown training mode '{}' (full, state or lora)", name);
}

TrainReport run_training(TrainOptions o, std::FILE* log) {
  check_options(o);
  // Under mpirun every process trains; process 0 alone logs and writes files.
  const Distributed& dist = Distributed::get();
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> quiet(nullptr, std::fclose);
  if (!dist.leader()) {
    quiet.reset(std::fopen("/dev/null", "w"));
    if (!quiet) fail("cannot open /dev/null");
    log = quiet.get();
  }
  o.optim.total_steps = o.steps;
  if (o.val_every == 0) o.val_every = std::max<int64_t>(1, o.steps / 10);
  if (o.svg.empty()) o.svg = o.output + ".svg";
  const std::string companion = train_state_path(o.output);

  auto archive = open_tensor_archive(o.model);
  const TrainConfig cfg = infer_config(*archive);
  const auto tokenizer = make_tokenizer(o.tokenizer, cfg.n_vocab, o.model);
  const Corpus corpus = load_corpus(o.data, *tokenizer, o.val_fraction);
  Sampler sampler(corpus.train, o.ctx_len, o.seed);
  TrainModel<float> model(cfg, o.chunk_len);
  load_params(*archive, model.layout(), model.params);
  archive.reset();

  const StateShape shape{Arch::V7,
                         uint32_t(cfg.n_layer),
                         uint32_t(cfg.n_embd),
                         uint32_t(cfg.n_head()),
                         uint32_t(cfg.head_size),
                         uint32_t(cfg.n_vocab)};
  const bool full = o.mode == TrainMode::Full, lora_mode = o.mode == TrainMode::Lora;
  if (!o.state_in.empty()) {
    const State s = load_state_file(o.state_in, shape, model.state_size()).state;
    std::copy(s.data().begin(), s.data().end(), model.state.begin());
  }
  std::unique_ptr<Lora<float>> lora;
  std::vector<float> lora_grad;
  if (lora_mode) {
    lora = std::make_unique<Lora<float>>(model.layout(), o.lora_rank, o.lora_alpha, model.params);
    lora->init(o.seed);
    lora_grad.assign(lora->adapters.size(), 0.0f);
    model.grad_mask = lora->grad_mask();
  }
  model.param_grads = o.mode != TrainMode::State;
  std::vector<float>& trained = full ? model.params : lora_mode ? lora->adapters : model.state;
  std::vector<float>& trained_grad = full ? model.grads : lora_mode ? lora_grad : model.state_grad;
  std::vector<ParamGroup> groups;
  if (full) {
    for (const TensorSpec& s : model.layout().tensors()) groups.push_back({s.offset, s.numel, s.decay, s.lr_scale});
  } else {
    groups.push_back({0, trained.size(), false, 1.0f});
  }
  AdamW optimizer(o.optim, groups, trained.size());

  const nlohmann::json settings = run_settings(o, cfg, corpus, tokenizer->name());
  TrainReport report;
  int64_t step = 0, samples = 0;
  if (o.resume && std::filesystem::exists(companion)) {
    TrainState st = load_train_state(companion);
    const nlohmann::json& saved = st.info.at("settings");
    for (const auto& [key, value] : settings.items())
      if (!saved.contains(key) || saved.at(key) != value)
        fail("{}: cannot resume: {} was {}, now {} (use the same settings, or train afresh without --resume)",
             companion, key, saved.contains(key) ? saved.at(key).dump() : "absent", value.dump());
    auto take = [&](const char* name, std::vector<float>& into) {
      auto it = st.arrays.find(name);
      if (it == st.arrays.end() || it->second.size() != into.size())
        fail("{}: array '{}' is missing or has the wrong size", companion, name);
      into = std::move(it->second);
    };
    take("trained", trained);
    take("adam_m", optimizer.m);
    take("adam_v", optimizer.v);
    step = st.info.at("step").get<int64_t>();
    samples = st.info.at("samples").get<int64_t>();
    optimizer.steps_taken = st.info.at("adam_steps").get<int64_t>();
    for (const auto& r : st.info.at("history"))
      report.train.push_back(
          {r.at(0).get<int64_t>(), r.at(1).get<double>(), r.at(2).get<double>(), r.at(3).get<double>()});
    for (const auto& r : st.info.at("val")) report.val.push_back({r.at(0).get<int64_t>(), r.at(1).get<double>()});
    if (st.info.at("steps").get<int64_t>() != o.steps)
      std::fprintf(log,
                   "note: --steps changed from %lld to %lld: the learning-rate schedule differs from the first run's\n",
                   static_cast<long long>(st.info.at("steps").get<int64_t>()), static_cast<long long>(o.steps));
    std::fprintf(log, "resuming %s at step %lld\n", companion.c_str(), static_cast<long long>(step));
  } else if (o.resume) {
    std::fprintf(log, "note: %s not found; starting from %s\n", companion.c_str(), o.model.c_str());
  }

  std::fprintf(log, "model %s (%zu parameters); training %s (%zu floats)\n", cfg.describe().c_str(),
               model.params.size(),
               full        ? "every parameter"
               : lora_mode ? "LoRA adapters of the projections"
                           : "the initial state",
               trained.size());
  if (dist.size() > 1)
    std::fprintf(log, "data parallel over %d processes: %lld sequences per step\n", dist.size(),
                 static_cast<long long>(o.batch * o.accumulate * dist.size()));
  std::fprintf(log,
               "data %s: %lld documents, %zu training tokens (%lld windows of %lld), %zu validation tokens; "
               "tokenizer %s\n",
               o.data.c_str(), static_cast<long long>(corpus.n_docs), corpus.train.size(),
               static_cast<long long>(sampler.windows()), static_cast<long long>(o.ctx_len), corpus.val.size(),
               tokenizer->name().c_str());

  auto save = [&] {
    if (!dist.leader()) return;
    if (full) {
      save_pth(o.output, model.layout(), model.params, o.save_dtype);
    } else if (lora_mode) {
      write_pth(o.output, lora->to_archive()->tensors());
    } else {
      State s(shape, model.state.size());
      std::copy(model.state.begin(), model.state.end(), s.data().begin());
      save_state_file(o.output, StateFile{std::move(s), {}});
      // The same wkv states in the layout RWKV-PEFT's state tuning saves:
      // blocks.N.att.time_state [H, N, N] float32, value index before key
      // index as ChatRWKV's x070 state (and this engine's) holds them. Token
      // shifts are not trained there, so they are not in that file.
      const int64_t C = cfg.n_embd, H = cfg.n_head(), N = cfg.head_size, per_layer = 2 * C + H * N * N;
      std::vector<TensorInfo> peft;
      for (int64_t l = 0; l < cfg.n_layer; ++l)
        peft.push_back({fmt::format("blocks.{}.att.time_state", l), DType::F32, {H, N, N},
                        reinterpret_cast<const std::byte*>(model.state.data() + l * per_layer + C),
                        size_t(H * N * N) * sizeof(float)});
      write_pth(o.output + ".pth", peft);
    }
    TrainState st;
    st.info["settings"] = settings;
    st.info["step"] = step;
    st.info["steps"] = o.steps;
    st.info["samples"] = samples;
    st.info["adam_steps"] = optimizer.steps_taken;
    st.info["history"] = nlohmann::json::array();
    for (const StepRecord& r : report.train) st.info["history"].push_back({r.step, r.loss, r.lr, r.grad_norm});
    st.info["val"] = nlohmann::json::array();
    for (const ValRecord& r : report.val) st.info["val"].push_back({r.step, r.loss});
    st.arrays["trained"] = trained;
    st.arrays["adam_m"] = optimizer.m;
    st.arrays["adam_v"] = optimizer.v;
    save_train_state(companion, st);
    Series train{"train", "#1f77b4", {}}, val{"validation", "#d62728", {}};
    for (const StepRecord& r : report.train) train.points.push_back({double(r.step), r.loss});
    for (const ValRecord& r : report.val) val.points.push_back({double(r.step), r.loss});
    std::vector<Series> curves = {train};
    if (!val.points.empty()) curves.push_back(val);
    write_loss_chart(o.svg, "RWKV-7 " + cfg.describe(), curves);
    std::fprintf(log, "saved %s and %s at step %lld\n", o.output.c_str(), companion.c_str(),
                 static_cast<long long>(step));
  };

  if (lora) lora->merge_into(model.params);
  if (step == 0) {  // the starting point of the validation curve
    const double v = validate(model, corpus.val, o);
    if (std::isfinite(v)) {
      report.val.push_back({0, v});
      std::fprintf(log, "step 0  validation loss %.4f\n", v);
    }
  }

  SigintGuard guard;
  const int64_t B = o.batch, T = o.ctx_len;
  std::vector<int32_t> inputs(size_t(B * T)), targets(size_t(B * T));
  const LossOptions loss_options{.l2wrap = o.l2wrap, .scale = 1.0 / double(o.accumulate)};
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  bool stopped = false;
  while (step < o.steps) {
    model.zero_grads();
    double loss = 0.0;
    for (int64_t micro = 0; micro < o.accumulate; ++micro) {
      // The step's sequences are split between the processes: this one's share of the micro-batch.
      const int64_t first = samples + (micro * dist.size() + dist.rank()) * B;
      for (int64_t b = 0; b < B; ++b) sampler.sample(first + b, &inputs[size_t(b * T)], &targets[size_t(b * T)]);
      loss += model.loss(inputs, targets, B, T, loss_options, true) / double(o.accumulate);
    }
    samples += B * o.accumulate * dist.size();
    if (lora) lora->gradients(model.grads, lora_grad);
    dist.mean(trained_grad);
    loss = dist.mean(loss);
    if (!std::isfinite(loss)) fail("the loss became {} at step {}; lower --lr", loss, step + 1);
    const double lr = learning_rate(o.optim, step);
    const double norm = optimizer.step(trained, trained_grad, lr);
    if (lora) lora->merge_into(model.params);  // W0 + s B A with the updated adapters
    ++step;
    report.train.push_back({step, loss, lr, norm});

    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double per_step = elapsed / double(step - first_step);
    if (o.log_every > 0 && (step % o.log_every == 0 || step == o.steps))
      std::fprintf(log, "step %lld/%lld  loss %.4f  lr %.2e  |g| %.3g  %.0f tok/s  ETA %s\n",
                   static_cast<long long>(step), static_cast<long long>(o.steps), loss, lr, norm,
                   double(B * T * o.accumulate * dist.size()) / per_step,
                   duration(per_step * double(o.steps - step)).c_str());
    if (step % o.val_every == 0 || step == o.steps) {
      const double v = validate(model, corpus.val, o);
      if (std::isfinite(v)) {
        report.val.push_back({step, v});
        std::fprintf(log, "step %lld  validation loss %.4f\n", static_cast<long long>(step), v);
      }
    }
    std::fflush(log);
    // Every process must stop at the same step, whichever saw the signal.
    const bool interrupted = dist.any(g_interrupted.load());
    const bool stop = (o.stop_after > 0 && step - first_step >= o.stop_after) || interrupted;
    if (stop && step < o.steps) {
      stopped = true;
      if (interrupted) std::fprintf(log, "interrupted at step %lld\n", static_cast<long long>(step));
      break;
    }
    if (o.save_every > 0 && step % o.save_every == 0 && step < o.steps) save();
  }
  save();
  if (stopped) std::fprintf(log, "stopped before step %lld; continue with --resume\n", static_cast<long long>(o.steps));
  report.steps_done = step;
  report.finished = step >= o.steps;
  return report;
}

}  // namespace rwkv::train
