// Tensor layouts written by other tools, turned into the official one
// (BlinkDL's checkpoint names, shapes and values) that the version loaders
// and the converter work with. Containers (formats/) know nothing of RWKV;
// this is where their names get a meaning.
//
//   llama.cpp GGUF (convert_hf_to_gguf.py, architectures rwkv6 and rwkv7):
//     blk.N.time_mix_* / channel_mix_* names; LoRA matrices stored [out, in];
//     token-shift mixes fused into time_mix_lerp_fused; vectors squeezed; RWKV-7
//     r_k flattened; RWKV-6 time_maa_w2 as [5, C, D]; RWKV-6 output and
//     ffn value weights divided by 2^(layer / rescale_every_n_layers); dummy
//     layer-0 v0/v1/v2 (copies of a0/a1/a2) in RWKV-7.
//   Hugging Face RwkvForCausalLM (RWKV-4), Rwkv5ForCausalLM (5.2) and
//     Rwkv6ForCausalLM: rwkv.* names (embeddings, blocks.0.pre_ln, attention,
//     feed_forward), time_mix_key/value/receptance/gate; values unchanged.
//     config.json beside the file is read when present.
//   flash-linear-attention RWKV7ForCausalLM: model.layers.N.attn.*, LoRAs as
//     nn.Linear pairs ([out, in]) with w0/a0/v0 as the second layer's bias;
//     config.json beside the file is read when present.
//   rwkv.cpp: read natively by the loaders; undone only on request (for
//     conversion), which recomputes the decay/bonus transforms in double.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "formats/tensor_archive.h"

namespace rwkv {

enum class Layout { Official, RwkvCpp, LlamaCppRwkv6, LlamaCppRwkv7, HfRwkv, FlaRwkv7 };

std::string_view layout_name(Layout layout);

// Which layout the archive's tensors (and, for GGUF, its metadata) are in;
// fails for a GGUF of an architecture other than rwkv6/rwkv7.
Layout detect_layout(const TensorArchive& archive);

// The archive with official names, shapes and values. Official archives
// (and rwkv.cpp ones unless `undo_rwkvcpp`) are returned as they are; others
// become a new archive whose tensors view the source's data where the bytes
// are unchanged and own a transformed copy where they are not. Metadata is
// carried over, plus "rwkv.layout_mapped_from" = layout_name() (which makes
// detect_layout call the result official). Unknown or missing tensors of
// a recognised layout are errors naming them.
std::shared_ptr<const TensorArchive> to_official_layout(std::shared_ptr<const TensorArchive> archive,
                                                        bool undo_rwkvcpp = false);

// The archive in rwkv.cpp's layout: what rwkv.cpp's convert_pytorch_to_ggml.py
// writes from the official checkpoint that to_official_layout(archive, true)
// gives (the inverse of reading an rwkv.cpp file): RWKV-4's decay as
// -exp(time_decay), RWKV-5.x's as exp(-exp(time_decay)) and bonus as
// exp(time_first) (computed in double), mixes as flat vectors, per-head
// vectors as [H, N, 1], RWKV-6's and RWKV-7's LoRA matrices transposed,
// RWKV-7's six token-shift mixes stacked into x_rwkvag. Vectors and
// transformed tensors are float32; matrices keep f32 or f16 (bf16 becomes
// f32, which rwkv.cpp files hold exactly). Metadata gets rwkvcpp.n_vocab,
// rwkvcpp.n_embed and rwkvcpp.n_layer. Fails for quantized tensors that
// would have to be rearranged.
std::shared_ptr<const TensorArchive> to_rwkvcpp_layout(std::shared_ptr<const TensorArchive> archive);

// The World vocabulary of a GGUF written by llama.cpp (tokenizer.ggml.model
// "rwkv"), as the text of an rwkv_vocab_v20230424.txt file ("<id> <bytes
// literal> <length>" per line, ids 1.. in order; llama.cpp's "<s>" at id 0
// and its "[PAD…]" fillers are left out), so that WorldTokenizer::parse can
// build the tokenizer. Empty if the archive has no such vocabulary.
std::string world_vocab_from_gguf(const TensorArchive& archive);

}  // namespace rwkv
