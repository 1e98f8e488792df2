// Hyper-parameters of a loaded model, inferred from its tensors.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace rwkv {

enum class Arch : uint32_t { V4 = 4, V5_0 = 50, V5_1 = 51, V5_2 = 52, V6 = 6, V7 = 7 };

std::string_view arch_name(Arch arch);

// RWKV-7 releases told apart by their extra tensors. DeepEmbed (the "rwkv7a"
// files, e.g. rwkv7a-g1b; ChatRWKV's RWKV_DE_VERSION=1) adds a per-token
// gate to every channel mix: blocks.N.ffn.s_emb.weight, s_emb_x.weight, s0,
// s1, s2. The G1 releases are plain x070 (same tensors, other training data).
enum class V7Variant { Plain, DeepEmbed };

struct ModelConfig {
  Arch arch = Arch::V7;
  std::string variant;      // e.g. "x070"
  std::string file_format;  // container the weights came from ("pth", "rwkv.cpp")
  DType dtype = DType::F32; // storage type of the large matrices
  int64_t n_layer = 0;
  int64_t n_embd = 0;
  int64_t n_vocab = 0;
  int64_t head_size = 0;
  int64_t n_head = 0;
  int64_t dim_ffn = 0;
  // RWKV-7 LoRA ranks: decay (w), in-context learning rate (a), value residual (v), gate (g).
  // RWKV-6 uses lora_w for its decay LoRA (time_decay_w1/w2).
  int64_t lora_w = 0, lora_a = 0, lora_v = 0, lora_g = 0;
  // RWKV-6 token-shift LoRA rank: time_maa_w1 is [C, 5 * lora_mix].
  int64_t lora_mix = 0;
  // RWKV-7 DeepEmbed: size D of the per-token D x D matrices (0: none).
  int64_t deep_embed = 0;
  int64_t n_params = 0;  // elements in the file's tensors
};

}  // namespace rwkv
