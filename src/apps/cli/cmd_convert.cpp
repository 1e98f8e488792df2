// rwkv convert: any model file the engine reads -> official names in a .pth
// or a safetensors file (the engine's preferred format: mapped in place), or
// (RWKV-6/7) llama.cpp's GGUF.
#include <cstdio>
#include <filesystem>
#include <optional>

#include <fmt/format.h>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "apps/cli/convert_gguf.h"
#include "core/error.h"
#include "formats/open.h"
#include "formats/pth_writer.h"
#include "formats/safetensors.h"
#include "model/layouts.h"
#include "model/loader.h"

namespace rwkv::cli {
namespace {

struct ConvertOptions {
  std::string model;
  std::string output;
  std::string dtype;   // "" keeps each tensor's own
  std::string format;  // "" picks by the output's extension
  std::string vocab;   // GGUF: World vocabulary file, "none", or "" to find it
};

int run_convert(const ConvertOptions& o) {
  std::optional<DType> dtype;
  if (o.dtype == "f32") dtype = DType::F32;
  else if (o.dtype == "f16") dtype = DType::F16;
  else if (o.dtype == "bf16") dtype = DType::BF16;
  else if (!o.dtype.empty()) fail("--dtype must be f32, f16 or bf16, not '{}'", o.dtype);
  std::string format = o.format;
  if (format.empty()) {
    const std::string ext = std::filesystem::path(o.output).extension().string();
    format = ext == ".pth" || ext == ".pt" ? "pth" : ext == ".gguf" ? "gguf" : "safetensors";
  }
  if (format != "pth" && format != "safetensors" && format != "gguf")
    fail("--format must be pth, safetensors or gguf, not '{}'", format);

  const auto source = open_tensor_archive(o.model);
  const auto official = to_official_layout(source, /*undo_rwkvcpp=*/true);
  // Refuse anything the engine would not load, before writing a byte.
  const auto model = load_model(official);
  const ModelConfig& c = model->config();
  fmt::print(stderr, "{}: RWKV-{} ({}), {} layers x {}, {} layout -> {} {}\n", o.model, arch_name(c.arch), c.variant,
             c.n_layer, c.n_embd, layout_name(detect_layout(*source)), format,
             dtype ? dtype_name(*dtype) : std::string_view("(dtypes kept)"));

  ProgressBar bar("converting", /*always=*/true);
  auto progress = [&](size_t done, size_t total) {
    bar.update(double(done), double(total), fmt::format("{:.1f}/{:.1f} MB", double(done) / 1e6, double(total) / 1e6));
  };
  if (format == "gguf") {
    write_model_gguf(o.output, *source, official, c, dtype, o.vocab, o.model, progress);
  } else if (format == "pth") {
    PthWriteOptions options;
    options.dtype = dtype;
    options.progress = progress;
    write_pth(o.output, official->tensors(), options);
  } else {
    SafetensorsWriteOptions options;
    options.dtype = dtype;
    options.progress = progress;
    options.metadata = {{"format", "pt"}, {"rwkv.converted_from", std::string(layout_name(detect_layout(*source)))}};
    write_safetensors(o.output, official->tensors(), options);
  }
  bar.finish();
  fmt::print(stderr, "wrote {}\n", o.output);
  return 0;
}

}  // namespace

Runner add_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "convert",
      "Convert a model file (.pth, rwkv.cpp .bin, GGUF, safetensors) to official names in .pth or safetensors, or "
      "(RWKV-6/7) to llama.cpp's GGUF");
  auto o = std::make_shared<ConvertOptions>();
  cmd->add_option("-m,--model", o->model, "Input model file")->required();
  cmd->add_option("-o,--output", o->output, "Output file (written only when complete)")->required();
  cmd->add_option("--dtype", o->dtype, "Store every tensor as f32, f16 or bf16 (default: keep each tensor's; GGUF: the matrices, "
                  "vectors and LoRAs stay f32 as llama.cpp has them)");
  cmd->add_option("--format", o->format,
                  "pth, safetensors or gguf (default: pth for a .pth/.pt output, gguf for .gguf, safetensors "
                  "otherwise)");
  cmd->add_option("--vocab", o->vocab,
                  "GGUF: World vocabulary file for the tokenizer, or 'none' (default: a 65536-token model's from a "
                  "GGUF input or rwkv_vocab_v20230424.txt found as for tokenize)");
  return [o] { return run_convert(*o); };
}

}  // namespace rwkv::cli
