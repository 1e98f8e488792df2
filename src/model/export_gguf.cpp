#include "model/export_gguf.h"

#include <cmath>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "core/error.h"

namespace rwkv {
namespace {

using Shape = std::vector<int64_t>;

std::string shape_text(const Shape& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// llama.cpp's general.file_type (enum llama_ftype) for the matrices' type.
uint32_t file_type(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::BF16: return 32;
    case DType::Q4_NL: break;  // refused by the GGUF writer
  }
  return 0;
}

// Collects the GGUF tensors from an official archive, remembering which
// source tensors were taken so that none is silently dropped.
class Exporter {
 public:
  Exporter(std::shared_ptr<const TensorArchive> src, std::optional<DType> matrix_type)
      : src_(std::move(src)), matrix_type_(matrix_type), out_(std::make_shared<TensorArchive>()) {
    out_->keep_alive(src_);
  }

  const TensorInfo& get(const std::string& name) {
    const TensorInfo* t = src_->find(name);
    if (t == nullptr) fail("{}: missing tensor '{}'", src_->path, name);
    used_.insert(name);
    return *t;
  }
  bool has(const std::string& name) const { return src_->contains(name); }
  void skip(const std::string& name) { used_.insert(name); }

  // The source's bytes under a GGUF name and shape (same element count).
  void view(const std::string& name, const TensorInfo& t, const Shape& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (n != t.numel())
      fail("{}: tensor '{}' has shape {}, expected {} elements for '{}'", src_->path, t.name, shape_text(t.shape), n,
           name);
    if (is_quantized(t.dtype) && (shape.empty() || shape.back() != t.shape.back()))
      fail("{}: tensor '{}' is {} and would need its rows reshaped for '{}'; convert with --dtype f32, f16 or bf16",
           src_->path, t.name, dtype_name(t.dtype), name);
    TensorInfo v = t;
    v.name = name;
    v.shape = shape;
    add(std::move(v));
  }

  // [a, b] -> [b, a], or [p, a, b] -> [p, b, a].
  void transpose(const std::string& name, const TensorInfo& t) {
    if (t.shape.size() != 2 && t.shape.size() != 3)
      fail("{}: tensor '{}' has shape {}, expected a matrix", src_->path, t.name, shape_text(t.shape));
    const size_t e = float_size(t);
    const bool batched = t.shape.size() == 3;
    const int64_t p = batched ? t.shape[0] : 1, a = t.shape[batched], b = t.shape[batched + 1];
    TensorInfo o = t;
    o.name = name;
    o.shape = batched ? Shape{p, b, a} : Shape{b, a};
    std::byte* dst = out_->own(t.nbytes);
    transpose_matrices(t.data, dst, p, a, b, e);
    o.data = dst;
    add(std::move(o));
  }

  // The parts (each of `width` elements) one after another as f32, shaped `shape`.
  void stack(const std::string& name, const std::vector<const TensorInfo*>& parts, int64_t width, const Shape& shape) {
    TensorInfo o;
    o.name = name;
    o.dtype = DType::F32;
    o.shape = shape;
    o.nbytes = parts.size() * size_t(width) * 4;
    auto* dst = reinterpret_cast<float*>(out_->own(o.nbytes));
    for (size_t i = 0; i < parts.size(); ++i) {
      if (parts[i]->numel() != width)
        fail("{}: tensor '{}' has shape {}, expected {} elements", src_->path, parts[i]->name,
             shape_text(parts[i]->shape), width);
      convert_to_f32(parts[i]->dtype, parts[i]->data, dst + i * size_t(width), size_t(width));
    }
    o.data = reinterpret_cast<const std::byte*>(dst);
    add(std::move(o));
  }

  // Values divided by 2^k in the same dtype, which is exact for floats away
  // from the subnormal range; quantized blocks by their fp16 scale (and
  // minimum), checked to stay exact.
  void halved(const std::string& name, const TensorInfo& t, int k) {
    if (k == 0) return view(name, t, t.shape);
    const float factor = std::ldexp(1.0f, -k);
    TensorInfo o = t;
    o.name = name;
    std::byte* dst = out_->own(t.nbytes);
    if (const int64_t bad = scale_tensor(t.dtype, t.data, size_t(t.numel()), t.nbytes, factor, dst); bad >= 0)
      fail("{}: tensor '{}' block {}: its scale divided by 2^{} is not exact in fp16; convert with --dtype", src_->path,
           t.name, bad, k);
    o.data = dst;
    add(std::move(o));
  }

  // Fails naming every source tensor nothing took.
  void check_all_used(std::string_view arch) const {
    std::string left;
    for (const TensorInfo& t : src_->tensors())
      if (!used_.count(t.name)) left += (left.empty() ? "'" : ", '") + t.name + "'";
    if (!left.empty())
      fail("{}: tensors that llama.cpp's {} has no place for: {}", src_->path, arch, left);
  }

  std::vector<GgufTensor>& tensors() { return tensors_; }
  std::shared_ptr<const TensorArchive> storage() const { return out_; }

 private:
  size_t float_size(const TensorInfo& t) const {
    if (is_quantized(t.dtype))
      fail("{}: tensor '{}' is {} and would need transposing; convert with --dtype f32, f16 or bf16", src_->path,
           t.name, dtype_name(t.dtype));
    return dtype_size(t.dtype);
  }

  // llama.cpp converter's choice: F32 for 1-D tensors, norms, names not
  // ending in .weight, and RWKV's time_mix_first / w1 / w2 / decay_w1 /
  // decay_w2 / lerp_fused; the matrix type for the rest.
  DType type_of(const TensorInfo& t) const {
    const std::string& n = t.name;
    auto ends = [&](std::string_view s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
    bool f32 = t.shape.size() <= 1 || ends("_norm.weight") || !ends(".weight");
    for (const char* kind : {".time_mix_first.weight", ".time_mix_w1.weight", ".time_mix_w2.weight",
                             ".time_mix_decay_w1.weight", ".time_mix_decay_w2.weight", ".time_mix_lerp_fused.weight"})
      f32 |= ends(kind);
    if (f32) return DType::F32;
    if (matrix_type_) return *matrix_type_;
    return t.dtype;  // the model's own: floats and quantized blocks kept
  }

  void add(TensorInfo t) {
    const DType type = type_of(t);
    tensors_.push_back({std::move(t), type});
  }

  std::shared_ptr<const TensorArchive> src_;
  std::optional<DType> matrix_type_;
  std::shared_ptr<TensorArchive> out_;
  std::vector<GgufTensor> tensors_;
  std::set<std::string> used_;
};

// Embedding, its norm and the per-layer norms (both architectures), in
// token_embd, token_embd_norm order; the output side is added by finish_common.
void start_common(Exporter& x, int64_t C) {
  const TensorInfo& emb = x.get("emb.weight");
  x.view("token_embd.weight", emb, emb.shape);
  x.view("token_embd_norm.weight", x.get("blocks.0.ln0.weight"), {C});
  x.view("token_embd_norm.bias", x.get("blocks.0.ln0.bias"), {C});
}

void layer_norms(Exporter& x, const std::string& o, const std::string& g, int64_t C) {
  x.view(g + "attn_norm.weight", x.get(o + "ln1.weight"), {C});
  x.view(g + "attn_norm.bias", x.get(o + "ln1.bias"), {C});
  x.view(g + "attn_norm_2.weight", x.get(o + "ln2.weight"), {C});
  x.view(g + "attn_norm_2.bias", x.get(o + "ln2.bias"), {C});
}

void finish_common(Exporter& x, int64_t C) {
  x.view("output_norm.weight", x.get("ln_out.weight"), {C});
  x.view("output_norm.bias", x.get("ln_out.bias"), {C});
  const TensorInfo& head = x.get("head.weight");
  x.view("output.weight", head, head.shape);
}

void export_rwkv7(Exporter& x, const ModelConfig& c) {
  const int64_t C = c.n_embd;
  start_common(x, C);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string o = "blocks." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
    const std::string a = o + "att.", t = g + "time_mix_";
    layer_norms(x, o, g, C);
    std::vector<const TensorInfo*> mixes;
    for (const char* m : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) mixes.push_back(&x.get(a + m));
    x.stack(t + "lerp_fused.weight", mixes, C, {6, 1, 1, C});
    for (const char* lora : {"w", "a", "v", "g"}) {
      const std::string s = lora;
      if (l == 0 && s == "v") {
        // Layer 0 has no value residual; llama.cpp still expects v0/v1/v2
        // there and its converter writes copies of a0/a1/a2.
        for (const char* d : {"v0", "v1", "v2"})
          if (x.has(a + d)) x.skip(a + d);
        x.view(t + "v0.weight", x.get(a + "a0"), {C});
        x.transpose(t + "v1.weight", x.get(a + "a1"));
        x.transpose(t + "v2.weight", x.get(a + "a2"));
        continue;
      }
      if (s != "g") x.view(t + s + "0.weight", x.get(a + s + "0"), {C});
      x.transpose(t + s + "1.weight", x.get(a + s + "1"));  // [C, D] -> [D, C]
      x.transpose(t + s + "2.weight", x.get(a + s + "2"));  // [D, C] -> [C, D]
    }
    x.view(t + "k_k.weight", x.get(a + "k_k"), {C});
    x.view(t + "k_a.weight", x.get(a + "k_a"), {C});
    x.view(t + "r_k.weight", x.get(a + "r_k"), {C});
    for (const char* w : {"receptance", "key", "value", "output"}) {
      const TensorInfo& m = x.get(a + w + ".weight");
      x.view(t + w + ".weight", m, m.shape);
    }
    x.view(t + "ln.weight", x.get(a + "ln_x.weight"), {C});
    x.view(t + "ln.bias", x.get(a + "ln_x.bias"), {C});
    const std::string f = o + "ffn.", cm = g + "channel_mix_";
    x.view(cm + "lerp_k.weight", x.get(f + "x_k"), {C});
    for (const char* w : {"key", "value"}) {
      const TensorInfo& m = x.get(f + w + ".weight");
      x.view(cm + w + ".weight", m, m.shape);
    }
  }
  finish_common(x, C);
}

void export_rwkv6(Exporter& x, const ModelConfig& c, int64_t rescale_every) {
  const int64_t C = c.n_embd;
  start_common(x, C);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string o = "blocks." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
    const std::string a = o + "att.", t = g + "time_mix_";
    // llama.cpp halves the residual stream every rescale_every layers (as the
    // Hugging Face model does in fp16); the converter divides to match.
    const int k = rescale_every > 0 ? int(std::min<int64_t>(l / rescale_every, 64)) : 0;
    layer_norms(x, o, g, C);
    x.view(t + "lerp_x.weight", x.get(a + "time_maa_x"), {C});
    std::vector<const TensorInfo*> mixes;
    for (const char* m : {"w", "k", "v", "r", "g"}) mixes.push_back(&x.get(a + "time_maa_" + m));
    x.stack(t + "lerp_fused.weight", mixes, C, {5, 1, 1, C});
    x.transpose(t + "w1.weight", x.get(a + "time_maa_w1"));  // [C, 5D] -> [5D, C]
    x.transpose(t + "w2.weight", x.get(a + "time_maa_w2"));  // [5, D, C] -> [5, C, D]
    x.view(t + "decay.weight", x.get(a + "time_decay"), {C});
    x.transpose(t + "decay_w1.weight", x.get(a + "time_decay_w1"));
    x.transpose(t + "decay_w2.weight", x.get(a + "time_decay_w2"));
    const TensorInfo& first = x.get(a + "time_faaaa");
    x.view(t + "first.weight", first, first.shape);
    for (const char* w : {"key", "value", "receptance", "gate"}) {
      const TensorInfo& m = x.get(a + w + ".weight");
      x.view(t + w + ".weight", m, m.shape);
    }
    x.view(t + "ln.weight", x.get(a + "ln_x.weight"), {C});
    x.view(t + "ln.bias", x.get(a + "ln_x.bias"), {C});
    x.halved(t + "output.weight", x.get(a + "output.weight"), k);
    const std::string f = o + "ffn.", cm = g + "channel_mix_";
    x.view(cm + "lerp_k.weight", x.get(f + "time_maa_k"), {C});
    x.view(cm + "lerp_r.weight", x.get(f + "time_maa_r"), {C});
    const TensorInfo& key = x.get(f + "key.weight");
    x.view(cm + "key.weight", key, key.shape);
    x.halved(cm + "value.weight", x.get(f + "value.weight"), k);
    const TensorInfo& r = x.get(f + "receptance.weight");
    x.view(cm + "receptance.weight", r, r.shape);
  }
  finish_common(x, C);
}

}  // namespace

std::string python_bytes_repr(std::string_view bytes) {
  const bool double_quotes = bytes.find('\'') != std::string_view::npos && bytes.find('"') == std::string_view::npos;
  const char quote = double_quotes ? '"' : '\'';
  std::string out;
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == static_cast<unsigned char>(quote) || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
  return out;
}

std::string gguf_size_label(uint64_t n_params) {
  const double n = double(n_params);
  double scaled = n * 1e-3;
  const char* suffix = "K";
  if (n > 1e12) scaled = n * 1e-12, suffix = "T";
  else if (n > 1e9) scaled = n * 1e-9, suffix = "B";
  else if (n > 1e6) scaled = n * 1e-6, suffix = "M";
  // Python's round() (half to even, as nearbyint in the default mode).
  const std::string whole = fmt::format("{}", static_cast<long long>(std::nearbyint(scaled)));
  const size_t digits = whole == "0" ? 0 : whole.size();
  const int decimals = std::max(2 - int(digits), 0);
  return fmt::format("{:.{}f}{}", scaled, decimals, suffix);
}

std::string gguf_architecture(const ModelConfig& c, const std::string& path) {
  if (c.arch == Arch::V6) return "rwkv6";
  if (c.arch == Arch::V7 && c.deep_embed == 0) return "rwkv7";
  if (c.arch == Arch::V7)
    fail("{}: RWKV-7 DeepEmbed ({}) has no llama.cpp GGUF architecture; convert it to pth or safetensors", path,
         c.variant);
  fail("{}: RWKV-{} has no llama.cpp GGUF architecture (llama.cpp runs RWKV-6 and RWKV-7 only); convert it to pth "
       "or safetensors",
       path, arch_name(c.arch));
}

GgufExport export_gguf(std::shared_ptr<const TensorArchive> official, const ModelConfig& c,
                       const GgufExportOptions& options) {
  const std::string arch = gguf_architecture(c, official->path);
  if (options.dtype && is_quantized(*options.dtype))
    fail("GGUF export writes f32, f16 or bf16 matrices, not {}", dtype_name(*options.dtype));
  const DType matrix_type = options.dtype.value_or(c.dtype);
  if (!options.world_tokens.empty() && int64_t(options.world_tokens.size()) > c.n_vocab)
    fail("{}: the World vocabulary has ids up to {}, more than the model's {} logits", official->path,
         options.world_tokens.size() - 1, c.n_vocab);

  Exporter x(official, options.dtype);
  if (arch == "rwkv7") export_rwkv7(x, c);
  else export_rwkv6(x, c, options.rescale_every);
  x.check_all_used(arch);

  GgufExport out;
  uint64_t n_params = 0;
  for (const GgufTensor& t : x.tensors()) n_params += uint64_t(t.source.numel());
  auto& kv = out.metadata;
  auto u32 = [](int64_t v) { return GgufValue(uint32_t(v)); };
  kv.push_back({"general.architecture", arch});
  kv.push_back({"general.type", std::string("model")});
  if (!options.name.empty()) kv.push_back({"general.name", options.name});
  kv.push_back({"general.size_label", gguf_size_label(n_params)});
  kv.push_back({arch + ".context_length", u32(1048576)});  // RWKV has no context limit
  kv.push_back({arch + ".embedding_length", u32(c.n_embd)});
  kv.push_back({arch + ".block_count", u32(c.n_layer)});
  kv.push_back({arch + ".attention.layer_norm_epsilon", 1e-5f});
  if (arch == "rwkv6") {
    kv.push_back({arch + ".rescale_every_n_layers", u32(options.rescale_every)});
    kv.push_back({arch + ".wkv.head_size", u32(c.head_size)});
    kv.push_back({arch + ".time_mix_extra_dim", u32(c.lora_mix)});
    kv.push_back({arch + ".time_decay_extra_dim", u32(c.lora_w)});
  } else {
    kv.push_back({arch + ".wkv.head_size", u32(c.head_size)});
    kv.push_back({arch + ".attention.decay_lora_rank", u32(c.lora_w)});
    kv.push_back({arch + ".attention.iclr_lora_rank", u32(c.lora_a)});
    kv.push_back({arch + ".attention.value_residual_mix_lora_rank", u32(c.lora_v)});
    kv.push_back({arch + ".attention.gate_lora_rank", u32(c.lora_g)});
  }
  kv.push_back({arch + ".feed_forward_length", u32(c.dim_ffn)});
  kv.push_back({"general.file_type", GgufValue(file_type(matrix_type))});
  kv.push_back({arch + ".attention.head_count", u32(0)});  // required by llama.cpp, unused
  kv.push_back({"general.quantization_version", u32(2)});
  if (options.world_tokens.empty()) {
    kv.push_back({"tokenizer.ggml.model", std::string("none")});
    kv.push_back({arch + ".vocab_size", u32(c.n_vocab)});
  } else {
    // llama.cpp's layout of the World vocabulary: "<s>" (control) at 0, the
    // vocabulary's tokens (normal), "[PAD<id>]" (unused) up to n_vocab.
    std::vector<std::string> tokens = {"<s>"};
    std::vector<int32_t> types = {3};
    for (size_t id = 1; id < options.world_tokens.size(); ++id) {
      tokens.push_back(python_bytes_repr(options.world_tokens[id]));
      types.push_back(1);
    }
    for (int64_t id = int64_t(tokens.size()); id < c.n_vocab; ++id) {
      tokens.push_back(fmt::format("[PAD{}]", id));
      types.push_back(5);
    }
    kv.push_back({"tokenizer.ggml.model", std::string("rwkv")});
    kv.push_back({"tokenizer.ggml.tokens", std::move(tokens)});
    kv.push_back({"tokenizer.ggml.token_type", std::move(types)});
    kv.push_back({"tokenizer.ggml.eot_token_id", u32(261)});  // "\n\n", llama.cpp's choice for chat
    kv.push_back({"tokenizer.ggml.bos_token_id", u32(0)});
    kv.push_back({"tokenizer.ggml.eos_token_id", u32(0)});
    kv.push_back({"tokenizer.chat_template", std::string("rwkv-world")});
  }
  out.tensors = std::move(x.tensors());
  out.storage = x.storage();
  return out;
}

}  // namespace rwkv
