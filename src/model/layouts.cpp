#include "model/layouts.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "core/error.h"
#include "model/loader.h"

namespace rwkv {
namespace {

using Shape = std::vector<int64_t>;

// Metadata key marking an archive this file made: it has the official layout.
constexpr const char* kMappedFrom = "rwkv.layout_mapped_from";

std::string shape_text(const Shape& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Builds an official-layout archive from a source archive, tracking which
// source tensors were used so that leftovers are reported, not dropped.
class Mapper {
 public:
  Mapper(std::shared_ptr<const TensorArchive> src, Layout layout)
      : src_(std::move(src)), layout_(layout), out_(std::make_shared<TensorArchive>()) {
    // An undone rwkv.cpp file must not be read as rwkv.cpp's layout again.
    out_->format = layout == Layout::RwkvCpp ? "official" : src_->format;
    out_->path = src_->path;
    out_->metadata = src_->metadata;
    out_->string_lists = src_->string_lists;
    out_->number_lists = src_->number_lists;
    out_->metadata[kMappedFrom] = std::string(layout_name(layout));
    out_->keep_alive(src_);
  }

  const TensorArchive& src() const { return *src_; }
  const std::string& path() const { return src_->path; }
  bool has(const std::string& name) const { return src_->contains(name); }

  const TensorInfo& get(const std::string& name) {
    const TensorInfo* t = src_->find(name);
    if (t == nullptr) fail("{}: missing tensor '{}' ({} layout)", path(), name, layout_name(layout_));
    used_.insert(name);
    return *t;
  }
  void skip(const std::string& name) { used_.insert(name); }

  // The source's bytes under a new name and shape.
  void view(const std::string& name, const TensorInfo& t, const Shape& shape) { view_part(name, t, 0, 1, shape); }

  // Part `part` of `parts` equal slices of t (split along its outermost dimension).
  void view_part(const std::string& name, const TensorInfo& t, int64_t part, int64_t parts, const Shape& shape) {
    if (numel_of(shape) * parts != t.numel())
      fail("{}: tensor '{}' has shape {}, which does not hold {} x {} for '{}'", path(), t.name, shape_text(t.shape),
           parts, shape_text(shape), name);
    // Quantized blocks run along the rows: those must stay as they are.
    if (is_quantized(t.dtype) && (t.shape.empty() || shape.empty() || shape.back() != t.shape.back()))
      fail("{}: tensor '{}' is quantized ({}) and would need its rows reshaped to {} for '{}'", path(), t.name,
           dtype_name(t.dtype), shape_text(shape), name);
    TensorInfo v;
    v.name = name;
    v.dtype = t.dtype;
    v.shape = shape;
    v.nbytes = t.nbytes / size_t(parts);
    v.data = t.data + size_t(part) * v.nbytes;
    pending_.push_back(std::move(v));
  }

  // A 2-D [a, b] tensor as its [b, a] transpose, or a 3-D [p, a, b] one as
  // p transposed [b, a] slices.
  void transpose(const std::string& name, const TensorInfo& t) {
    if (t.shape.size() != 2 && t.shape.size() != 3)
      fail("{}: tensor '{}' has shape {}, expected a matrix", path(), t.name, shape_text(t.shape));
    const size_t elem = element_size(t);
    const bool batched = t.shape.size() == 3;
    const int64_t p = batched ? t.shape[0] : 1, a = t.shape[batched], b = t.shape[batched + 1];
    TensorInfo o = like(name, t, batched ? Shape{p, b, a} : Shape{b, a});
    std::byte* dst = out_->own(o.nbytes);
    transpose_matrices(t.data, dst, p, a, b, elem);
    o.data = dst;
    pending_.push_back(std::move(o));
  }

  // Values times `factor` (a power of two, so exact), in the same dtype;
  // quantized blocks by their fp16 scale (and minimum), which is exact too.
  void scaled(const std::string& name, const TensorInfo& t, float factor) {
    TensorInfo o = like(name, t, t.shape);
    std::byte* dst = out_->own(o.nbytes);
    if (const int64_t bad = scale_tensor(t.dtype, t.data, size_t(t.numel()), t.nbytes, factor, dst); bad >= 0)
      fail("{}: tensor '{}' block {}: its scale times {} does not fit in fp16", path(), t.name, bad, factor);
    o.data = dst;
    pending_.push_back(std::move(o));
  }

  // Values through fn (computed in double), stored as f32 with a new shape:
  // for rwkv.cpp's precomputed decays, whose inverse should lose nothing
  // more than one float32 rounding.
  template <typename F>
  void mapped(const std::string& name, const TensorInfo& t, const Shape& shape, F fn) {
    if (numel_of(shape) != t.numel())
      fail("{}: tensor '{}' has shape {}, expected {} elements", path(), t.name, shape_text(t.shape), numel_of(shape));
    const size_t n = size_t(t.numel());
    std::vector<float> v(n);
    convert_to_f32(t.dtype, t.data, v.data(), n);
    TensorInfo o;
    o.name = name;
    o.dtype = DType::F32;
    o.shape = shape;
    o.nbytes = 4 * n;
    auto* dst = reinterpret_cast<float*>(out_->own(o.nbytes));
    for (size_t i = 0; i < n; ++i) {
      dst[i] = float(fn(double(v[i])));
      if (!std::isfinite(dst[i]))
        fail("{}: tensor '{}' holds {} at index {}, outside the range its converter writes", path(), t.name, v[i], i);
    }
    o.data = reinterpret_cast<const std::byte*>(dst);
    pending_.push_back(std::move(o));
  }

  std::shared_ptr<const TensorArchive> finish() {
    std::string unexpected;
    for (const TensorInfo& t : src_->tensors())
      if (used_.count(t.name) == 0) unexpected += (unexpected.empty() ? "'" : ", '") + t.name + "'";
    if (!unexpected.empty())
      fail("{}: unexpected tensors in a {} file: {}", path(), layout_name(layout_), unexpected);
    // The official order, whatever the source's: emb, then block by block
    // (by number, not as text), then ln_out and head.
    auto rank = [](const std::string& name) -> int64_t {
      if (starts_with(name, "emb.")) return -1;
      if (!starts_with(name, "blocks.")) return INT64_MAX;
      return std::strtoll(name.c_str() + 7, nullptr, 10);
    };
    std::stable_sort(pending_.begin(), pending_.end(),
                     [&](const TensorInfo& a, const TensorInfo& b) { return rank(a.name) < rank(b.name); });
    for (TensorInfo& t : pending_) out_->add(std::move(t));
    return out_;
  }

 private:
  size_t element_size(const TensorInfo& t) const {
    const size_t e = dtype_size(t.dtype);
    if (e == 0) fail("{}: tensor '{}' is {}, which cannot be rearranged", path(), t.name, dtype_name(t.dtype));
    return e;
  }
  static TensorInfo like(const std::string& name, const TensorInfo& t, const Shape& shape) {
    TensorInfo o;
    o.name = name;
    o.dtype = t.dtype;
    o.shape = shape;
    o.nbytes = t.nbytes;
    return o;
  }

  std::shared_ptr<const TensorArchive> src_;
  Layout layout_;
  std::shared_ptr<TensorArchive> out_;
  std::vector<TensorInfo> pending_;  // added to out_ in official order by finish()
  std::set<std::string> used_;
};

int64_t meta_int(const TensorArchive& a, const std::string& key, int64_t fallback = -1) {
  auto it = a.metadata.find(key);
  if (it == a.metadata.end()) {
    if (fallback >= 0) return fallback;
    fail("{}: GGUF metadata '{}' is missing", a.path, key);
  }
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used == it->second.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  fail("{}: GGUF metadata '{}' is '{}', not a non-negative integer", a.path, key, it->second);
}

// n_embd from the embedding, checked to be a matrix.
int64_t embedding_width(Mapper& m, const std::string& name) {
  const TensorInfo& e = m.get(name);
  if (e.shape.size() != 2 || e.shape[0] <= 0 || e.shape[1] <= 0)
    fail("{}: tensor '{}' has shape {}, expected [n_vocab, n_embd]", m.path(), name, shape_text(e.shape));
  return e.shape[1];
}

// ---- llama.cpp GGUF ------------------------------------------------------------------

// What both GGUF architectures share: embedding, its norm, output norm and head, per-layer norms.
int64_t gguf_common(Mapper& m, const std::string& arch, int64_t& n_layer) {
  const int64_t C = embedding_width(m, "token_embd.weight");
  m.view("emb.weight", m.get("token_embd.weight"), m.get("token_embd.weight").shape);
  m.view("blocks.0.ln0.weight", m.get("token_embd_norm.weight"), {C});
  m.view("blocks.0.ln0.bias", m.get("token_embd_norm.bias"), {C});
  m.view("ln_out.weight", m.get("output_norm.weight"), {C});
  m.view("ln_out.bias", m.get("output_norm.bias"), {C});
  m.view("head.weight", m.get("output.weight"), m.get("output.weight").shape);
  n_layer = meta_int(m.src(), arch + ".block_count");
  if (n_layer <= 0 || n_layer > 4096) fail("{}: {}.block_count is {}", m.path(), arch, n_layer);
  for (int64_t l = 0; l < n_layer; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".", o = "blocks." + std::to_string(l) + ".";
    m.view(o + "ln1.weight", m.get(g + "attn_norm.weight"), {C});
    m.view(o + "ln1.bias", m.get(g + "attn_norm.bias"), {C});
    m.view(o + "ln2.weight", m.get(g + "attn_norm_2.weight"), {C});
    m.view(o + "ln2.bias", m.get(g + "attn_norm_2.bias"), {C});
  }
  return C;
}

std::shared_ptr<const TensorArchive> from_gguf_rwkv7(std::shared_ptr<const TensorArchive> src) {
  Mapper m(src, Layout::LlamaCppRwkv7);
  int64_t n_layer = 0;
  const int64_t C = gguf_common(m, "rwkv7", n_layer);
  const int64_t N = meta_int(*src, "rwkv7.wkv.head_size");
  if (N <= 0 || C % N != 0) fail("{}: rwkv7.wkv.head_size {} does not divide n_embd {}", m.path(), N, C);
  const Shape vec = {1, 1, C};
  for (int64_t l = 0; l < n_layer; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".time_mix_", o = "blocks." + std::to_string(l) + ".att.";
    const TensorInfo& lerp = m.get(g + "lerp_fused.weight");  // [6, 1, 1, C]: r w k v a g
    const char* mixes[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
    for (int i = 0; i < 6; ++i) m.view_part(o + mixes[i], lerp, i, 6, vec);
    for (const char* x : {"w", "a", "v", "g"}) {
      const std::string s = x;
      if (l == 0 && s == "v") {  // the converter's dummies (copies of a0/a1/a2): never used
        for (const char* d : {"v0.weight", "v1.weight", "v2.weight"})
          if (m.has(g + d)) m.skip(g + d);
        continue;
      }
      if (s != "g") m.view(o + s + "0", m.get(g + s + "0.weight"), vec);
      m.transpose(o + s + "1", m.get(g + s + "1.weight"));  // [D, C] -> official [C, D]
      m.transpose(o + s + "2", m.get(g + s + "2.weight"));  // [C, D] -> official [D, C]
    }
    m.view(o + "k_k", m.get(g + "k_k.weight"), vec);
    m.view(o + "k_a", m.get(g + "k_a.weight"), vec);
    m.view(o + "r_k", m.get(g + "r_k.weight"), {C / N, N});
    for (const char* w : {"receptance", "key", "value", "output"}) {
      const TensorInfo& t = m.get(g + w + ".weight");
      m.view(o + w + ".weight", t, t.shape);
    }
    m.view(o + "ln_x.weight", m.get(g + "ln.weight"), {C});
    m.view(o + "ln_x.bias", m.get(g + "ln.bias"), {C});
    const std::string gc = "blk." + std::to_string(l) + ".channel_mix_", oc = "blocks." + std::to_string(l) + ".ffn.";
    m.view(oc + "x_k", m.get(gc + "lerp_k.weight"), vec);
    const TensorInfo& key = m.get(gc + "key.weight");
    const TensorInfo& value = m.get(gc + "value.weight");
    m.view(oc + "key.weight", key, key.shape);
    m.view(oc + "value.weight", value, value.shape);
  }
  return m.finish();
}

std::shared_ptr<const TensorArchive> from_gguf_rwkv6(std::shared_ptr<const TensorArchive> src) {
  Mapper m(src, Layout::LlamaCppRwkv6);
  int64_t n_layer = 0;
  const int64_t C = gguf_common(m, "rwkv6", n_layer);
  // The converter divided these by 2^(layer / rescale_every) (what the Hugging
  // Face model does at inference); llama.cpp halves the residual to match.
  const int64_t rescale = meta_int(*src, "rwkv6.rescale_every_n_layers", 0);
  const Shape vec = {1, 1, C};
  const char* order[5] = {"w", "k", "v", "r", "g"};  // of time_mix_lerp_fused and the LoRA parts
  for (int64_t l = 0; l < n_layer; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".time_mix_", o = "blocks." + std::to_string(l) + ".att.";
    const float factor = rescale > 0 ? std::ldexp(1.0f, int(std::min<int64_t>(l / rescale, 64))) : 1.0f;
    m.view(o + "time_maa_x", m.get(g + "lerp_x.weight"), vec);
    if (m.has(g + "lerp_fused.weight")) {
      const TensorInfo& fused = m.get(g + "lerp_fused.weight");  // [5, 1, 1, C]
      for (int i = 0; i < 5; ++i) m.view_part(o + "time_maa_" + order[i], fused, i, 5, vec);
    } else {  // older converters wrote them one by one
      for (const char* x : order) m.view(o + "time_maa_" + x, m.get(g + "lerp_" + x + ".weight"), vec);
    }
    m.transpose(o + "time_maa_w1", m.get(g + "w1.weight"));  // [5D, C] -> [C, 5D]
    m.transpose(o + "time_maa_w2", m.get(g + "w2.weight"));  // [5, C, D] -> [5, D, C]
    m.view(o + "time_decay", m.get(g + "decay.weight"), vec);
    m.transpose(o + "time_decay_w1", m.get(g + "decay_w1.weight"));
    m.transpose(o + "time_decay_w2", m.get(g + "decay_w2.weight"));
    const TensorInfo& first = m.get(g + "first.weight");
    m.view(o + "time_faaaa", first, first.shape);
    for (const char* w : {"receptance", "key", "value", "gate"}) {
      const TensorInfo& t = m.get(g + w + ".weight");
      m.view(o + w + ".weight", t, t.shape);
    }
    const TensorInfo& output = m.get(g + "output.weight");
    if (factor != 1.0f) m.scaled(o + "output.weight", output, factor);
    else m.view(o + "output.weight", output, output.shape);
    m.view(o + "ln_x.weight", m.get(g + "ln.weight"), {C});
    m.view(o + "ln_x.bias", m.get(g + "ln.bias"), {C});
    const std::string gc = "blk." + std::to_string(l) + ".channel_mix_", oc = "blocks." + std::to_string(l) + ".ffn.";
    m.view(oc + "time_maa_k", m.get(gc + "lerp_k.weight"), vec);
    m.view(oc + "time_maa_r", m.get(gc + "lerp_r.weight"), vec);
    for (const char* w : {"key", "receptance"}) {
      const TensorInfo& t = m.get(gc + w + ".weight");
      m.view(oc + w + ".weight", t, t.shape);
    }
    const TensorInfo& value = m.get(gc + "value.weight");
    if (factor != 1.0f) m.scaled(oc + "value.weight", value, factor);
    else m.view(oc + "value.weight", value, value.shape);
  }
  return m.finish();
}

// ---- Hugging Face / flash-linear-attention ---------------------------------------------

// config.json beside the model file, or null if there is none.
nlohmann::json read_config(const TensorArchive& a) {
  const std::filesystem::path config = std::filesystem::path(a.path).parent_path() / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(config, ec)) return nullptr;
  std::ifstream in(config);
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    if (!j.is_object()) fail("{}: not a JSON object", config.string());
    return j;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: cannot parse it: {}", config.string(), e.what());
  }
}

// Checks config.json's architecture and sizes against the tensors; returns
// whether the output head is tied to the embedding.
bool check_config(const nlohmann::json& config, const TensorArchive& a, const std::string& arch, int64_t n_vocab,
                  int64_t n_embd, int64_t n_layer) {
  if (config.is_null()) return false;
  const std::string where = (std::filesystem::path(a.path).parent_path() / "config.json").string();
  if (config.contains("architectures")) {
    const auto& list = config["architectures"];
    bool found = false;
    if (list.is_array())
      for (const auto& x : list) found |= x.is_string() && x.get<std::string>() == arch;
    if (!found) fail("{}: architectures is {}, expected [\"{}\"] for these tensors", where, list.dump(), arch);
  }
  auto check = [&](const char* key, int64_t value) {
    if (!config.contains(key) || config[key].is_null()) return;
    if (!config[key].is_number_integer() || config[key].get<int64_t>() != value)
      fail("{}: {} is {}, but the tensors say {}", where, key, config[key].dump(), value);
  };
  check("vocab_size", n_vocab);
  check("hidden_size", n_embd);
  check("num_hidden_layers", n_layer);
  return config.contains("tie_word_embeddings") && config["tie_word_embeddings"].is_boolean() &&
         config["tie_word_embeddings"].get<bool>();
}

int64_t count_layers(const TensorArchive& a, const std::string& prefix, const std::string& suffix) {
  int64_t n = 0;
  while (a.contains(prefix + std::to_string(n) + suffix)) ++n;
  return n;
}

// Hugging Face's RWKV classes: RwkvForCausalLM (RWKV-4, in transformers),
// Rwkv5ForCausalLM and Rwkv6ForCausalLM (the RWKV/rwkv-5-world-*-hf and
// rwkv-6-world-*-hf repositories' modeling code). Their converters only
// rename: rwkv. prefix (not on head.weight), embeddings, blocks.0.pre_ln,
// attention, feed_forward, time_mix_{key,value,receptance,gate}; shapes and
// values (time_decay, time_faaaa, time_maa_*, LoRAs) are the official ones.
// Their code rescales output/value weights at load time only, never in the
// file. (Rwkv5ForCausalLM's GroupNorm uses torch's default eps 1e-5 where
// the official code has 64e-5; the engine computes the official model.)
std::shared_ptr<const TensorArchive> from_hf_rwkv(std::shared_ptr<const TensorArchive> src) {
  Mapper m(src, Layout::HfRwkv);
  const int64_t C = embedding_width(m, "rwkv.embeddings.weight");
  const int64_t V = src->find("rwkv.embeddings.weight")->shape[0];
  const int64_t n_layer = count_layers(*src, "rwkv.blocks.", ".ln1.weight");
  // The class the tensors belong to, by detect_arch's rules on the HF names.
  bool maa = false, ln_x = false;
  for (const TensorInfo& t : src->tensors()) {
    maa |= t.name.find(".attention.time_maa") != std::string::npos;
    ln_x |= t.name.find(".attention.ln_x.") != std::string::npos;
  }
  const char* arch = maa ? "Rwkv6ForCausalLM" : ln_x ? "Rwkv5ForCausalLM" : "RwkvForCausalLM";
  const nlohmann::json config = read_config(*src);
  const bool tied = check_config(config, *src, arch, V, C, n_layer);
  if ((maa || ln_x) && config.is_object() && config.contains("head_size") && config["head_size"].is_number_integer()) {
    const TensorInfo* first = src->find("rwkv.blocks.0.attention.time_faaaa");
    if (first != nullptr && first->shape.size() == 2 && config["head_size"].get<int64_t>() != first->shape[1])
      fail("{}: head_size is {}, but the tensors say {}",
           (std::filesystem::path(src->path).parent_path() / "config.json").string(), config["head_size"].dump(),
           first->shape[1]);
  }
  auto official = [&](std::string n) -> std::string {
    if (n == "head.weight") return n;
    if (!starts_with(n, "rwkv.")) return "";
    n = n.substr(5);
    if (starts_with(n, "embeddings.")) return "emb." + n.substr(11);
    if (starts_with(n, "ln_out.")) return n;
    if (!starts_with(n, "blocks.")) return "";
    auto replace = [&](std::string_view from, std::string_view to) {
      const size_t at = n.find(from);
      if (at != std::string::npos) n.replace(at, from.size(), to);
    };
    if (starts_with(n, "blocks.0.pre_ln.")) replace("pre_ln", "ln0");
    replace(".attention.", ".att.");
    replace(".feed_forward.", ".ffn.");
    for (auto [from, to] : {std::pair{".time_mix_key", ".time_mix_k"}, std::pair{".time_mix_value", ".time_mix_v"},
                            std::pair{".time_mix_receptance", ".time_mix_r"}, std::pair{".time_mix_gate", ".time_mix_g"}})
      if (n.ends_with(from)) n = n.substr(0, n.size() - std::strlen(from)) + to;
    return n;
  };
  for (const TensorInfo& t : src->tensors()) {
    const std::string name = official(t.name);
    if (name.empty()) continue;  // left for finish() to report
    m.view(name, m.get(t.name), t.shape);
  }
  if (!src->contains("head.weight") && tied) m.view("head.weight", *src->find("rwkv.embeddings.weight"), {V, C});
  return m.finish();
}

std::shared_ptr<const TensorArchive> from_fla_rwkv7(std::shared_ptr<const TensorArchive> src) {
  Mapper m(src, Layout::FlaRwkv7);
  const int64_t C = embedding_width(m, "model.embeddings.weight");
  const int64_t V = src->find("model.embeddings.weight")->shape[0];
  const int64_t n_layer = count_layers(*src, "model.layers.", ".attn_norm.weight");
  const bool tied = check_config(read_config(*src), *src, "RWKV7ForCausalLM", V, C, n_layer);
  const Shape vec = {1, 1, C};
  m.view("emb.weight", m.get("model.embeddings.weight"), {V, C});
  m.view("ln_out.weight", m.get("model.norm.weight"), {C});
  m.view("ln_out.bias", m.get("model.norm.bias"), {C});
  if (src->contains("lm_head.weight") || !tied) {
    const TensorInfo& head = m.get("lm_head.weight");
    m.view("head.weight", head, head.shape);
  } else {
    m.view("head.weight", *src->find("model.embeddings.weight"), {V, C});
  }
  // fla's utils/convert_from_rwkv7.py: LoRA w1/w2 -> {w,a,v,g}_lora.lora.0/2.weight
  // transposed, w0/a0/v0 -> lora.2.bias, [1, 1, C] vectors squeezed (x_* kept).
  for (const TensorInfo& t : src->tensors()) {
    const std::string& n = t.name;
    if (!starts_with(n, "model.layers.")) continue;
    const size_t dot = n.find('.', 13);
    if (dot == std::string::npos) continue;
    const std::string layer = n.substr(13, dot - 13), rest = n.substr(dot + 1);
    const std::string o = "blocks." + layer + ".";
    auto norm = [&](std::string_view fla, std::string_view official) {
      for (const char* p : {"weight", "bias"})
        if (rest == std::string(fla) + "." + p) m.view(o + std::string(official) + "." + p, m.get(n), {C});
    };
    norm("pre_norm", "ln0");
    norm("attn_norm", "ln1");
    norm("ffn_norm", "ln2");
    norm("attn.g_norm", "att.ln_x");
    if (starts_with(rest, "attn.x_") && rest.size() == 8) {
      if (rest == "attn.x_x") {  // all six fused, r w k v a g
        const char* mixes[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
        for (int i = 0; i < 6; ++i) m.view_part(o + "att." + mixes[i], m.get(n), i, 6, vec);
      } else {
        m.view(o + "att." + rest.substr(5), m.get(n), vec);
      }
    }
    if (rest == "attn.k_k" || rest == "attn.k_a") m.view(o + "att." + rest.substr(5), m.get(n), vec);
    if (rest == "attn.r_k") m.view(o + "att.r_k", m.get(n), t.shape);
    for (auto [fla, official] : {std::pair{"r_proj", "receptance"}, std::pair{"k_proj", "key"},
                                 std::pair{"v_proj", "value"}, std::pair{"o_proj", "output"}})
      if (rest == std::string("attn.") + fla + ".weight") m.view(o + "att." + official + ".weight", m.get(n), t.shape);
    for (const char* x : {"w", "a", "v", "g"}) {
      const std::string lora = std::string("attn.") + x + "_lora.lora.";
      if (rest == lora + "0.weight") m.transpose(o + "att." + x + "1", m.get(n));
      if (rest == lora + "2.weight") m.transpose(o + "att." + x + "2", m.get(n));
      if (rest == lora + "2.bias") m.view(o + "att." + x + "0", m.get(n), vec);
    }
    if (rest == "ffn.x_k") m.view(o + "ffn.x_k", m.get(n), vec);
    if (rest == "ffn.key.weight" || rest == "ffn.value.weight") m.view(o + rest, m.get(n), t.shape);
  }
  return m.finish();
}

// ---- rwkv.cpp --------------------------------------------------------------------------

// Inverts rwkv.cpp's convert_pytorch_to_ggml.py (see the version loaders for
// what it wrote): the result loads through the official code paths.
std::shared_ptr<const TensorArchive> from_rwkvcpp(std::shared_ptr<const TensorArchive> src) {
  const Arch arch = detect_arch(*src);
  Mapper m(src, Layout::RwkvCpp);
  const int64_t C = embedding_width(m, "emb.weight");
  const Shape vec = {1, 1, C};
  const bool v5 = arch == Arch::V5_0 || arch == Arch::V5_1 || arch == Arch::V5_2;
  int64_t H = 0;  // v5: time_decay's first dimension; v6: time_faaaa's
  if (v5 || arch == Arch::V6) {
    const TensorInfo* t = src->find(v5 ? "blocks.0.att.time_decay" : "blocks.0.att.time_faaaa");
    if (t == nullptr || t->shape.empty() || t->shape[0] <= 0 || C % t->shape[0] != 0)
      fail("{}: cannot tell the head count from blocks.0.att.time_{}", m.path(), v5 ? "decay" : "faaaa");
    H = t->shape[0];
  }
  for (const TensorInfo& t : src->tensors()) {
    const std::string& n = t.name;
    m.get(n);
    const bool mix = n.find(".time_mix_") != std::string::npos || n.find(".time_maa_") != std::string::npos;
    if (arch == Arch::V4 && n.ends_with("att.time_decay")) {
      m.mapped(n, t, {C}, [](double w) { return std::log(-w); });  // stored -exp(time_decay)
    } else if (v5 && n.ends_with("att.time_decay")) {
      const Shape shape = t.numel() == H ? Shape{H} : Shape{H, t.numel() / H};
      m.mapped(n, t, shape, [](double w) { return std::log(-std::log(w)); });  // stored exp(-exp(.))
    } else if (v5 && n.ends_with("att.time_first")) {
      m.mapped(n, t, {H}, [](double u) { return std::log(u); });  // stored exp(time_first)
    } else if (n.ends_with("att.time_faaaa")) {
      m.view(n, t, {H, C / H});
    } else if (arch == Arch::V6 && (n.ends_with("time_maa_w1") || n.ends_with("time_maa_w2") ||
                                    n.ends_with("time_decay_w1") || n.ends_with("time_decay_w2"))) {
      m.transpose(n, t);
    } else if ((arch == Arch::V6 && n.ends_with("att.time_decay")) || mix) {
      m.view(n, t, vec);
    } else if (arch == Arch::V7 && n.ends_with(".att.x_rwkvag")) {
      const std::string prefix = n.substr(0, n.size() - 8);  // "blocks.N.att."
      const char* mixes[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
      for (int i = 0; i < 6; ++i) m.view_part(prefix + mixes[i], t, i, 6, vec);
    } else if (arch == Arch::V7 && n.size() > 3 && n[n.size() - 3] == '.' &&
               std::string_view("wavg").find(n[n.size() - 2]) != std::string_view::npos &&
               (n.back() == '1' || n.back() == '2') && n.find(".att.") != std::string::npos) {
      m.transpose(n, t);  // LoRA stored [out, in]
    } else {
      m.view(n, t, t.shape);
    }
  }
  return m.finish();
}

// ---- to rwkv.cpp ----------------------------------------------------------------------

// Builds an rwkv.cpp-layout archive from an official one (to_rwkvcpp_layout).
class RwkvCppWriter {
 public:
  explicit RwkvCppWriter(std::shared_ptr<const TensorArchive> official)
      : src_(std::move(official)), out_(std::make_shared<TensorArchive>()) {
    out_->format = "rwkv.cpp";
    out_->path = src_->path;
    out_->keep_alive(src_);
  }
  const std::string& path() const { return src_->path; }
  TensorArchive& out() { return *out_; }
  std::shared_ptr<const TensorArchive> result() { return out_; }

  // The source's bytes with a new shape; bf16 widened to f32.
  void view(const std::string& name, const TensorInfo& t, const Shape& shape) {
    if (numel_of(shape) != t.numel())
      fail("{}: tensor '{}' has shape {}, expected {} elements", path(), t.name, shape_text(t.shape), numel_of(shape));
    if (t.dtype == DType::BF16) return mapped(name, {&t}, shape, [](double v) { return v; });
    TensorInfo o = t;
    o.name = name;
    o.shape = shape;
    out_->add(std::move(o));
  }

  // The values of `parts` (concatenated) through fn in double, as f32.
  template <typename F>
  void mapped(const std::string& name, const std::vector<const TensorInfo*>& parts, const Shape& shape, F fn) {
    int64_t n = 0;
    for (const TensorInfo* t : parts) n += t->numel();
    if (n != numel_of(shape))
      fail("{}: tensor '{}' has shape {}, expected {} elements", path(), parts[0]->name, shape_text(parts[0]->shape),
           numel_of(shape));
    TensorInfo o;
    o.name = name;
    o.dtype = DType::F32;
    o.shape = shape;
    o.nbytes = size_t(n) * 4;
    auto* dst = reinterpret_cast<float*>(out_->own(o.nbytes));
    std::vector<float> v;
    size_t at = 0;
    for (const TensorInfo* t : parts) {
      v.resize(size_t(t->numel()));
      convert_to_f32(t->dtype, t->data, v.data(), v.size());
      for (float x : v) dst[at++] = float(fn(double(x)));
    }
    o.data = reinterpret_cast<const std::byte*>(dst);
    out_->add(std::move(o));
  }

  // A [a, b] matrix as its [b, a] transpose, or [p, a, b] as p transposed slices.
  void transpose(const std::string& name, const TensorInfo& t) {
    if ((t.shape.size() != 2 && t.shape.size() != 3) || is_quantized(t.dtype))
      fail("{}: tensor '{}' ({}, shape {}) cannot be transposed for rwkv.cpp's layout", path(), t.name,
           dtype_name(t.dtype), shape_text(t.shape));
    const bool batched = t.shape.size() == 3;
    const int64_t p = batched ? t.shape[0] : 1, a = t.shape[batched], b = t.shape[batched + 1];
    std::vector<float> v(size_t(t.numel()));
    convert_to_f32(t.dtype, t.data, v.data(), v.size());
    TensorInfo o;
    o.name = name;
    o.dtype = t.dtype == DType::F16 ? DType::F16 : DType::F32;
    o.shape = batched ? Shape{p, b, a} : Shape{b, a};
    o.nbytes = size_t(t.numel()) * dtype_size(o.dtype);
    std::byte* dst = out_->own(o.nbytes);
    for (int64_t k = 0; k < p; ++k)
      for (int64_t i = 0; i < a; ++i)
        for (int64_t j = 0; j < b; ++j) {
          const float x = v[size_t(k * a * b + i * b + j)];
          const size_t at = size_t(k * a * b + j * a + i);
          if (o.dtype == DType::F32) {
            std::memcpy(dst + 4 * at, &x, 4);
          } else {
            const uint16_t h = f32_to_f16(x);  // exact: the value came from f16
            std::memcpy(dst + 2 * at, &h, 2);
          }
        }
    o.data = dst;
    out_->add(std::move(o));
  }

 private:
  std::shared_ptr<const TensorArchive> src_;
  std::shared_ptr<TensorArchive> out_;
};

// Python's repr(bytes) escapes (what llama.cpp stores for each World token), undone.
bool unescape_bytes_repr(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size()) return false;
    switch (s[i]) {
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 'x': {
        if (i + 2 >= s.size()) return false;
        int v = 0;
        for (int k = 1; k <= 2; ++k) {
          const char c = s[i + size_t(k)];
          const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
          if (d < 0) return false;
          v = v * 16 + d;
        }
        out += char(v);
        i += 2;
        break;
      }
      default: return false;
    }
  }
  return true;
}

}  // namespace

std::string_view layout_name(Layout layout) {
  switch (layout) {
    case Layout::Official: return "official";
    case Layout::RwkvCpp: return "rwkv.cpp";
    case Layout::LlamaCppRwkv6: return "llama.cpp rwkv6";
    case Layout::LlamaCppRwkv7: return "llama.cpp rwkv7";
    case Layout::HfRwkv: return "Hugging Face RwkvForCausalLM (RWKV-4/5/6)";
    case Layout::FlaRwkv7: return "flash-linear-attention RWKV7ForCausalLM";
  }
  return "?";
}

Layout detect_layout(const TensorArchive& a) {
  if (a.metadata.count(kMappedFrom)) return Layout::Official;
  if (a.format == "rwkv.cpp") return Layout::RwkvCpp;
  if (a.format == "gguf") {
    auto it = a.metadata.find("general.architecture");
    if (it == a.metadata.end()) fail("{}: GGUF file has no general.architecture", a.path);
    if (it->second == "rwkv6") return Layout::LlamaCppRwkv6;
    if (it->second == "rwkv7") return Layout::LlamaCppRwkv7;
    fail("{}: GGUF architecture '{}' is not supported (only llama.cpp's rwkv6 and rwkv7)", a.path, it->second);
  }
  if (a.contains("rwkv.embeddings.weight")) return Layout::HfRwkv;
  if (a.contains("model.embeddings.weight")) return Layout::FlaRwkv7;
  return Layout::Official;
}

std::shared_ptr<const TensorArchive> to_official_layout(std::shared_ptr<const TensorArchive> archive,
                                                        bool undo_rwkvcpp) {
  switch (detect_layout(*archive)) {
    case Layout::Official: return archive;
    case Layout::RwkvCpp: return undo_rwkvcpp ? from_rwkvcpp(std::move(archive)) : archive;
    case Layout::LlamaCppRwkv6: return from_gguf_rwkv6(std::move(archive));
    case Layout::LlamaCppRwkv7: return from_gguf_rwkv7(std::move(archive));
    case Layout::HfRwkv: return from_hf_rwkv(std::move(archive));
    case Layout::FlaRwkv7: return from_fla_rwkv7(std::move(archive));
  }
  return archive;
}

std::shared_ptr<const TensorArchive> to_rwkvcpp_layout(std::shared_ptr<const TensorArchive> archive) {
  if (detect_layout(*archive) == Layout::RwkvCpp) return archive;
  const auto official = to_official_layout(std::move(archive));
  const Arch arch = detect_arch(*official);
  RwkvCppWriter w(official);
  const TensorInfo* emb = official->find("emb.weight");
  if (emb == nullptr || emb->shape.size() != 2) fail("{}: no [n_vocab, n_embd] emb.weight", w.path());
  const int64_t C = emb->shape[1];
  int64_t n_layer = 0;
  for (const TensorInfo& t : official->tensors())
    if (starts_with(t.name, "blocks."))
      n_layer = std::max<int64_t>(n_layer, std::strtoll(t.name.c_str() + 7, nullptr, 10) + 1);
  w.out().metadata["rwkvcpp.n_vocab"] = std::to_string(emb->shape[0]);
  w.out().metadata["rwkvcpp.n_embed"] = std::to_string(C);
  w.out().metadata["rwkvcpp.n_layer"] = std::to_string(n_layer);

  const bool v5 = arch == Arch::V5_0 || arch == Arch::V5_1 || arch == Arch::V5_2;
  // [H, N] (or [H]) per-head vectors as rwkv.cpp's [H, N, 1] (or [H, 1, 1]).
  auto per_head = [](const TensorInfo& t) {
    return t.shape.size() == 1 ? Shape{t.shape[0], 1, 1} : Shape{t.shape[0], t.numel() / t.shape[0], 1};
  };
  for (const TensorInfo& t : official->tensors()) {
    const std::string& n = t.name;
    const std::string_view tail = std::string_view(n).substr(n.rfind('.') + 1);
    const bool lora = tail == "time_maa_w1" || tail == "time_maa_w2" || tail == "time_decay_w1" ||
                      tail == "time_decay_w2";
    const bool mix = !lora && (n.find(".time_mix_") != std::string::npos || n.find(".time_maa_") != std::string::npos);
    if (arch == Arch::V4 && n.ends_with("att.time_decay")) {
      w.mapped(n, {&t}, {t.numel()}, [](double d) { return -std::exp(d); });
    } else if (v5 && n.ends_with("att.time_decay")) {
      w.mapped(n, {&t}, per_head(t), [](double d) { return std::exp(-std::exp(d)); });
    } else if (v5 && n.ends_with("att.time_first")) {
      w.mapped(n, {&t}, per_head(t), [](double u) { return std::exp(u); });
    } else if (n.ends_with("att.time_faaaa")) {
      w.mapped(n, {&t}, per_head(t), [](double u) { return u; });
    } else if (arch == Arch::V6 && n.ends_with("att.time_decay")) {
      const TensorInfo* faaaa = official->find(n.substr(0, n.size() - 10) + "time_faaaa");
      if (faaaa == nullptr || faaaa->shape.empty()) fail("{}: '{}' has no time_faaaa beside it", w.path(), n);
      const int64_t H = faaaa->shape[0];
      w.mapped(n, {&t}, {H, t.numel() / H, 1}, [](double d) { return d; });
    } else if (arch == Arch::V6 && lora) {
      w.transpose(n, t);
    } else if (mix) {
      w.mapped(n, {&t}, {t.numel()}, [](double m) { return m; });
    } else if (arch == Arch::V7 && n.ends_with(".att.x_r")) {
      const std::string prefix = n.substr(0, n.size() - 3);  // "blocks.N.att."
      std::vector<const TensorInfo*> parts;
      for (const char* mix6 : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) {
        const TensorInfo* p = official->find(prefix + mix6);
        if (p == nullptr || p->numel() != C) fail("{}: '{}{}' is missing or not {} values", w.path(), prefix, mix6, C);
        parts.push_back(p);
      }
      w.mapped(prefix + "x_rwkvag", parts, {6, 1, C}, [](double m) { return m; });
    } else if (arch == Arch::V7 && n.find(".att.x_") != std::string::npos) {
      // x_w ... x_g: stacked with x_r above
    } else if (arch == Arch::V7 && n.find(".att.") != std::string::npos && tail.size() == 2 &&
               std::string_view("wavg").find(tail[0]) != std::string_view::npos && (tail[1] == '1' || tail[1] == '2')) {
      w.transpose(n, t);
    } else if (t.shape.size() != 2) {
      w.mapped(n, {&t}, t.shape, [](double v) { return v; });  // vectors as f32
    } else {
      w.view(n, t, t.shape);
    }
  }
  return w.result();
}

std::string world_vocab_from_gguf(const TensorArchive& a) {
  auto model = a.metadata.find("tokenizer.ggml.model");
  auto tokens = a.string_lists.find("tokenizer.ggml.tokens");
  if (model == a.metadata.end() || model->second != "rwkv" || tokens == a.string_lists.end()) return "";
  auto types = a.number_lists.find("tokenizer.ggml.token_type");
  const std::vector<double>* type = types == a.number_lists.end() ? nullptr : &types->second;
  if (type != nullptr && type->size() != tokens->second.size())
    fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", a.path, type->size(), tokens->second.size());
  std::string text, bytes;
  for (size_t id = 1; id < tokens->second.size(); ++id) {
    const std::string& t = tokens->second[id];
    // llama.cpp's World vocab: "<s>" (control) at 0, the file's tokens as
    // normal (1), "[PAD<id>]" fillers as unused (5).
    if (type != nullptr ? (*type)[id] != 1 : t == "[PAD" + std::to_string(id) + "]") continue;
    if (!unescape_bytes_repr(t, bytes)) fail("{}: World token {} ('{}') is not a Python bytes repr", a.path, id, t);
    text += std::to_string(id) + " b'";
    for (unsigned char c : bytes) text += fmt::format("\\x{:02x}", c);
    text += "' " + std::to_string(bytes.size()) + "\n";
  }
  return text;
}

}  // namespace rwkv
