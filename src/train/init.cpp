#include "train/init.h"

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "train/gemm.h"

namespace rwkv::train {

void orthogonal(int64_t rows, int64_t cols, double gain, uint64_t seed, float* out) {
  // k vectors of length n to orthonormalise: the columns of a tall matrix, the rows of a wide one.
  const int64_t k = std::min(rows, cols), n = std::max(rows, cols);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> q(static_cast<size_t>(k * n));
  for (double& x : q) x = normal(rng);
  // Block Gram-Schmidt, each projection done twice ("twice is enough") so the
  // result is orthonormal to rounding; Q's rows end up the Gram-Schmidt basis,
  // which is QR's Q with a positive diagonal in R.
  const int64_t block = 32;
  std::vector<double> proj(static_cast<size_t>(block * std::max<int64_t>(k, 1)));
  for (int64_t j0 = 0; j0 < k; j0 += block) {
    const int64_t nb = std::min(block, k - j0);
    double* X = q.data() + j0 * n;
    for (int pass = 0; pass < 2 && j0 > 0; ++pass) {
      gemm<double>(false, true, nb, j0, n, 1.0, X, n, q.data(), n, 0.0, proj.data(), j0);
      gemm<double>(false, false, nb, n, j0, -1.0, proj.data(), j0, q.data(), n, 1.0, X, n);
    }
    for (int64_t i = 0; i < nb; ++i) {
      double* x = X + i * n;
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t p = 0; p < i; ++p) {
          const double* y = X + p * n;
          double dot = 0.0;
          for (int64_t e = 0; e < n; ++e) dot += x[e] * y[e];
          for (int64_t e = 0; e < n; ++e) x[e] -= dot * y[e];
        }
      double norm = 0.0;
      for (int64_t e = 0; e < n; ++e) norm += x[e] * x[e];
      norm = std::sqrt(norm);
      if (!(norm > 1e-300)) fail("orthogonal init: degenerate random matrix");
      for (int64_t e = 0; e < n; ++e) x[e] /= norm;
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = float(gain * (rows < cols ? q[size_t(r * cols + c)] : q[size_t(c * rows + r)]));
}

void init_official(const ParamLayout& layout, std::span<float> params, uint64_t seed) {
  const TrainConfig& cfg = layout.config();
  if (params.size() != layout.size()) fail("init: buffer of {} floats for {}", params.size(), layout.size());
  const int64_t C = cfg.n_embd, N = cfg.head_size, L = cfg.n_layer, V = cfg.n_vocab;
  uint64_t stream = 0;  // every random tensor draws from its own seeded generator
  auto next_seed = [&] { return seed * 0x9E3779B97F4A7C15ull + (++stream); };
  auto at = [&](const std::string& name) { return params.data() + layout.at(name).offset; };
  auto fill = [&](const std::string& name, float value) {
    const TensorSpec& s = layout.at(name);
    std::fill(params.data() + s.offset, params.data() + s.offset + s.numel, value);
  };
  auto ortho = [&](const std::string& name, double gain) {
    const TensorSpec& s = layout.at(name);
    orthogonal(s.shape[0], s.shape[1], gain, next_seed(), at(name));
  };
  // ortho_init in RWKV_Tmix_x070: gain sqrt(rows / cols) for tall matrices.
  auto lora_ortho = [&](const std::string& name, double scale) {
    const TensorSpec& s = layout.at(name);
    const double gain = s.shape[0] > s.shape[1] ? std::sqrt(double(s.shape[0]) / double(s.shape[1])) : 1.0;
    ortho(name, gain * scale);
  };

  for (const TensorSpec& s : layout.tensors())
    std::fill(params.begin() + ptrdiff_t(s.offset), params.begin() + ptrdiff_t(s.offset + s.numel), 0.0f);
  {
    std::mt19937_64 rng(next_seed());
    std::uniform_real_distribution<double> u(-1e-4, 1e-4);
    float* e = at("emb.weight");
    for (int64_t i = 0; i < V * C; ++i) e[i] = float(u(rng));
  }
  fill("blocks.0.ln0.weight", 1.0f);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const std::string a = p + "att.";
    fill(p + "ln1.weight", 1.0f);
    fill(p + "ln2.weight", 1.0f);
    const double r01 = L > 1 ? double(l) / double(L - 1) : 0.0;  // 0 to 1
    const double r10 = 1.0 - double(l) / double(L);              // 1 to almost 0
    const struct {
      const char* name;
      double power;
    } mixes[] = {{"x_r", 0.2}, {"x_w", 0.9}, {"x_k", 0.7}, {"x_v", 0.7}, {"x_a", 0.9}, {"x_g", 0.2}};
    for (const auto& m : mixes) {
      float* x = at(a + m.name);
      for (int64_t i = 0; i < C; ++i) x[i] = float(1.0 - std::pow(double(i) / double(C), m.power * r10));
    }
    float *w0 = at(a + "w0"), *a0 = at(a + "a0"), *v0 = at(a + "v0"), *k_k = at(a + "k_k"), *k_a = at(a + "k_a");
    for (int64_t i = 0; i < C; ++i) {
      const double linear = C > 1 ? double(i) / double(C - 1) - 0.5 : -0.5;
      double zigzag = N > 1 ? (double(i % N) - double(N - 1) / 2) / (double(N - 1) / 2) : 0.0;
      zigzag *= std::fabs(zigzag);
      const double www = -6 + 6 * std::pow(C > 1 ? double(i) / double(C - 1) : 0.0, 1 + std::pow(r01, 0.3));
      w0[i] = float(www + 0.5 + zigzag * 2.5);
      a0[i] = float(-0.19 + zigzag * 0.3 + linear * 0.4);
      v0[i] = float(0.73 - linear * 0.4);
      k_k[i] = float(0.71 - linear * 0.1);
      k_a[i] = 1.02f;
    }
    lora_ortho(a + "w2", 0.1);
    lora_ortho(a + "a2", 0.1);
    lora_ortho(a + "v2", 0.1);
    lora_ortho(a + "g2", 0.1);
    fill(a + "r_k", -0.04f);
    // generate_init_weight: orthogonal with gain 1, 0.1 for att.key, zero for att.output.
    ortho(a + "receptance.weight", 1.0);
    ortho(a + "key.weight", 0.1);
    ortho(a + "value.weight", 1.0);
    fill(a + "ln_x.weight", float(std::pow(double(1 + l) / double(L), 0.7)));
    float* fx = at(p + "ffn.x_k");
    for (int64_t i = 0; i < C; ++i) fx[i] = float(1.0 - std::pow(double(i) / double(C), std::pow(r10, 4)));
    ortho(p + "ffn.key.weight", 1.0);
  }
  fill("ln_out.weight", 1.0f);
  ortho("head.weight", V > C ? 0.5 * std::sqrt(double(V) / double(C)) : 0.5);
}

}  // namespace rwkv::train
