#include "apps/cli/convert_gguf.h"

#include <filesystem>

#include "core/error.h"
#include "formats/gguf_writer.h"
#include "model/export_gguf.h"
#include "model/layouts.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_world.h"

namespace rwkv::cli {
namespace {

constexpr int64_t kWorldVocab = 65536;

// The World tokens by id (index 0 unused), or none.
std::vector<std::string> world_tokens(const TensorArchive& source, const ModelConfig& config, const std::string& vocab,
                                      const std::string& model_path) {
  if (vocab == "none" || (vocab.empty() && config.n_vocab != kWorldVocab)) return {};
  std::optional<WorldTokenizer> world;
  if (!vocab.empty()) {
    world = WorldTokenizer::load(vocab);
  } else if (const std::string text = world_vocab_from_gguf(source); !text.empty()) {
    world = WorldTokenizer::parse(text, source.path);
  } else {
    try {
      world = WorldTokenizer::load(find_world_vocab(model_path));
    } catch (const Error& e) {
      fail("{}\n(a GGUF of a {}-token model carries the World vocabulary; --vocab none writes one without it)",
           e.what(), kWorldVocab);
    }
  }
  // llama.cpp's converter numbers the file's tokens by line: ids must run 1, 2, ... without holes.
  if (world->token_count() + 1 != size_t(world->vocab_size()))
    fail("{}: the vocabulary's ids are not 1..{} without gaps, as a GGUF World vocabulary needs",
         vocab.empty() ? "World vocabulary" : vocab, world->token_count());
  std::vector<std::string> tokens(size_t(world->vocab_size()));
  for (int32_t id = 1; id < world->vocab_size(); ++id) tokens[size_t(id)] = std::string(world->token_bytes(id));
  return tokens;
}

}  // namespace

void write_model_gguf(const std::string& output, const TensorArchive& source,
                      std::shared_ptr<const TensorArchive> official, const ModelConfig& config,
                      std::optional<DType> dtype, const std::string& vocab, const std::string& model_path,
                      const std::function<void(size_t, size_t)>& progress) {
  gguf_architecture(config, model_path);  // before looking for a vocabulary
  GgufExportOptions options;
  options.dtype = dtype;
  options.name = std::filesystem::path(model_path).stem().string();
  options.world_tokens = world_tokens(source, config, vocab, model_path);
  const GgufExport gguf = export_gguf(std::move(official), config, options);
  GgufWriteOptions write_options;
  write_options.progress = progress;
  write_gguf(output, gguf.metadata, gguf.tensors, write_options);
}

}  // namespace rwkv::cli
