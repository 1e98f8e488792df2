// The official RWKV-7 initialisation (RWKV-LM RWKV-v7/train_temp/src/model.py:
// RWKV_Tmix_x070 / RWKV_CMix_x070 constructors, then generate_init_weight):
// per-layer ratios for the token-shift mixes and decays, zero or orthogonal
// LoRA factors, orthogonal projections with the official gains, zero output
// projections, tiny uniform embeddings, an orthogonal head. Random numbers
// come from a seeded mt19937_64, so a seed gives the same model everywhere
// (not torch's numbers: those depend on torch's generator).
#pragma once

#include <cstdint>
#include <span>

#include "train/params.h"

namespace rwkv::train {

void init_official(const ParamLayout& layout, std::span<float> params, uint64_t seed);

// A [rows, cols] matrix with orthonormal rows or columns (whichever are
// fewer) times gain, as torch.nn.init.orthogonal_ makes: QR of a Gaussian
// matrix with R's diagonal made positive. Row-major into out.
void orthogonal(int64_t rows, int64_t cols, double gain, uint64_t seed, float* out);

}  // namespace rwkv::train
