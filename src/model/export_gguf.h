// Official RWKV-6 and RWKV-7 weights as llama.cpp's GGUF (architectures
// rwkv6 and rwkv7): what llama.cpp's convert_hf_to_gguf.py writes for the
// same model, tensor by tensor and key by key, so that llama.cpp runs the
// file and the engine reads it back (model/layouts.h undoes every step):
//
//   names   blk.N.time_mix_* / channel_mix_*, token_embd(_norm), output(_norm);
//   shapes  [1, 1, C] vectors squeezed to [C]; token-shift mixes fused into
//           time_mix_lerp_fused ([6, 1, 1, C] r w k v a g for RWKV-7,
//           [5, 1, 1, C] w k v r g for RWKV-6); LoRA matrices transposed to
//           [out, in] (RWKV-6 time_maa_w2 [5, D, C] -> [5, C, D]); RWKV-7 r_k
//           flattened; RWKV-7 layer 0 gets dummy v0/v1/v2 (copies of a0/a1/a2);
//   values  unchanged, except RWKV-6 att.output and ffn.value divided by
//           2^(N / rescale_every) (exact: powers of two);
//   types   F32 for 1-D tensors, norms, time_mix_first, time_mix_w1/w2,
//           time_mix_decay_w1/w2 and time_mix_lerp_fused; the matrix type
//           (general.file_type) for the rest;
//   keys    general.*, {arch}.* hyper-parameters (read off the tensors, so
//           LoRA ranks are the real ones) and the tokenizer: llama.cpp's
//           "rwkv" World vocabulary ("<s>" + the vocabulary's tokens as
//           Python bytes reprs + "[PAD<id>]" fillers, eot 261, bos/eos 0,
//           chat template "rwkv-world", llama.cpp's built-in one) when one is
//           given, else "none" with {arch}.vocab_size.
//
// Other versions (4, 5.x) and RWKV-7 DeepEmbed have no llama.cpp
// architecture: refused with an error.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/gguf_writer.h"
#include "formats/tensor_archive.h"
#include "model/config.h"

namespace rwkv {

struct GgufExportOptions {
  // Type of the matrices (llama.cpp's --outtype f32/f16/bf16); unset: the
  // model's own (ModelConfig::dtype), quantized matrices kept as they are.
  std::optional<DType> dtype;
  std::string name;  // general.name
  // The World vocabulary's tokens by id (index 0 unused, then ids 1, 2, ...:
  // rwkv_vocab_v20230424.txt's order); empty: no vocabulary.
  std::vector<std::string> world_tokens;
  // RWKV-6: rwkv6.rescale_every_n_layers (that of the RWKV-6 World models'
  // Hugging Face config.json); 0 disables the rescaling.
  int64_t rescale_every = 6;
};

struct GgufExport {
  std::vector<GgufKeyValue> metadata;
  std::vector<GgufTensor> tensors;
  // Owns the tensors' transformed copies and keeps the source alive.
  std::shared_ptr<const TensorArchive> storage;
};

// "rwkv6" or "rwkv7"; fails for any other version or variant, naming the
// file at `path`.
std::string gguf_architecture(const ModelConfig& config, const std::string& path);

// `official`: the model's tensors in the official layout (to_official_layout);
// `config`: what load_model found in them.
GgufExport export_gguf(std::shared_ptr<const TensorArchive> official, const ModelConfig& config,
                       const GgufExportOptions& options = {});

// Python's repr() of `bytes` without its b'' quotes: what llama.cpp's
// converter stores for each World token.
std::string python_bytes_repr(std::string_view bytes);

// gguf-py's size label: 8.5M, 1.6B, 834K (two significant digits at least).
std::string gguf_size_label(uint64_t n_params);

}  // namespace rwkv
