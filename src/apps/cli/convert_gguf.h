// rwkv convert's GGUF output: the model as llama.cpp's rwkv6/rwkv7 GGUF
// (model/export_gguf.h) with the World vocabulary when the model has one.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "formats/tensor_archive.h"
#include "model/config.h"

namespace rwkv::cli {

// `vocab`: a World vocabulary file, "none" for no vocabulary, or empty: for a
// 65536-token model the vocabulary a source GGUF carries, else the World
// vocabulary file found as tokenizers are (runtime/tokenizer.h); for any
// other size none.
void write_model_gguf(const std::string& output, const TensorArchive& source,
                      std::shared_ptr<const TensorArchive> official, const ModelConfig& config,
                      std::optional<DType> dtype, const std::string& vocab, const std::string& model_path,
                      const std::function<void(size_t, size_t)>& progress);

}  // namespace rwkv::cli
