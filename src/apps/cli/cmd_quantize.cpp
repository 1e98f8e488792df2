// rwkv quantize: a float model file to a block-quantized rwkv.cpp one (file
// version 101), choosing the same tensors rwkv.cpp does and writing the same
// bytes for them. An rwkv.cpp FP32/FP16 file is quantized as it is; any other
// file the engine reads (.pth, safetensors, GGUF, ...) is first put in
// rwkv.cpp's layout as its converter would (model/layouts.h).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "apps/cli/commands.h"
#include "apps/cli/common.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/quant.h"
#include "core/thread_pool.h"
#include "formats/open.h"
#include "formats/rwkvcpp.h"
#include "model/layouts.h"
#include "model/loader.h"

namespace rwkv::cli {
namespace {

struct QuantizeOptions {
  std::string input;
  std::string output;
  std::string type;
};

DType parse_type(const std::string& name) {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_NL})
    if (dtype_name(t) == name) return t;
  fail("--type: '{}' is not one of q8_0, q4_0, q4_1, q5_0, q5_1, q4_nl", name);
}

// rwkv.cpp's rule (rwkv_quantize.inc): only matrices, and not the embedding,
// the head or RWKV-7's LoRAs and r_k, which are small and whose rounding
// costs the most accuracy.
bool wants_quantization(const TensorInfo& t) {
  if (t.shape.size() != 2 || t.name == "emb.weight" || t.name == "head.weight") return false;
  for (const char* keep : {"att.v1", "att.v2", "att.g1", "att.g2", "att.a1", "att.a2", "att.w1", "att.w2", "att.r_k"})
    if (t.name.find(keep) != std::string::npos) return false;
  return true;
}

template <typename T>
void put(AtomicFile& out, T value) {
  out.write(&value, sizeof value);
}

int run_quantize(const QuantizeOptions& o) {
  const DType target = parse_type(o.type);
  // Any model file the engine reads, in rwkv.cpp's layout (rwkv.cpp files as they are).
  const auto source = open_tensor_archive(o.input);
  for (const TensorInfo& t : source->tensors())
    if (is_quantized(t.dtype))
      fail("{}: tensor '{}' is already {}; quantize from a file with float weights", o.input, t.name,
           dtype_name(t.dtype));
  const auto archive = to_rwkvcpp_layout(source);
  if (archive != source) load_model(archive);  // refuse what the engine would not load, before writing
  const TensorArchive& in = *archive;

  size_t total_bytes = 0;
  for (const TensorInfo& t : in.tensors()) total_bytes += t.nbytes;

  AtomicFile out(o.output);
  put<uint32_t>(out, kRwkvCppMagic);
  put<uint32_t>(out, 101);  // the version whose quantized blocks have ggml's current layouts
  for (const char* key : {"rwkvcpp.n_vocab", "rwkvcpp.n_embed", "rwkvcpp.n_layer"})
    put<uint32_t>(out, uint32_t(std::stoul(in.metadata.at(key))));
  put<uint32_t>(out, rwkvcpp_type_code(target));

  ProgressBar progress("quantizing");
  size_t done_bytes = 0, written = 0, quantized = 0;
  std::vector<float> widened;
  std::vector<uint8_t> blocks;
  for (const TensorInfo& t : in.tensors()) {
    progress.update(double(done_bytes), double(total_bytes), t.name);
    const int64_t cols = t.shape.back();
    const bool quantize = wants_quantization(t) && cols % kQuantBlock == 0;
    const DType dtype = quantize ? target : t.dtype;
    put<uint32_t>(out, uint32_t(t.shape.size()));
    put<uint32_t>(out, uint32_t(t.name.size()));
    put<uint32_t>(out, rwkvcpp_type_code(dtype));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) put<uint32_t>(out, uint32_t(*d));  // innermost first
    out.write(t.name.data(), t.name.size());
    if (!quantize) {
      out.write(t.data, t.nbytes);
      written += t.nbytes;
    } else {
      const int64_t rows = t.shape[0];
      widened.resize(size_t(t.numel()));
      convert_to_f32(t.dtype, t.data, widened.data(), widened.size());
      const size_t row_bytes = dtype_bytes(target, cols);
      blocks.resize(size_t(rows) * row_bytes);
      // Rows are independent; each is quantized the same way on any thread.
      thread_pool().parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          quantize_row(target, widened.data() + r * cols, blocks.data() + size_t(r) * row_bytes, cols);
      });
      out.write(blocks.data(), blocks.size());
      written += blocks.size();
      ++quantized;
    }
    done_bytes += t.nbytes;
  }
  progress.finish();
  out.commit();
  fmt::print("{}: {} of {} tensors quantized to {}, {:.2f} MB -> {:.2f} MB\n", o.output, quantized,
             in.tensors().size(), dtype_name(target), double(total_bytes) / 1e6, double(written) / 1e6);
  return 0;
}

}  // namespace

Runner add_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a float model file to an rwkv.cpp file (as rwkv.cpp does)");
  auto o = std::make_shared<QuantizeOptions>();
  cmd->add_option("-m,--model", o->input, "Input model file with float weights (rwkv.cpp FP32/FP16, .pth, ...)")
      ->required();
  cmd->add_option("-o,--output", o->output, "Output rwkv.cpp model file")->required();
  cmd->add_option("--type", o->type,
                  "q8_0, q4_0, q4_1, q5_0, q5_1 (rwkv.cpp's), or q4_nl (this engine's own: Q4_0's size, "
                  "less error; only this engine reads it)")
      ->required();
  add_threads_flag(*cmd);
  return [o] { return run_quantize(*o); };
}

}  // namespace rwkv::cli
