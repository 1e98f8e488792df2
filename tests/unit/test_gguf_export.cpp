// The GGUF writer (formats/gguf_writer.h) and the export of official RWKV-6/7
// weights to llama.cpp's GGUF (model/export_gguf.h, rwkv convert --format
// gguf): checked against the GGUF that llama.cpp's own converter wrote from
// the shared .pth, tensor by tensor, key by key (value types included), and
// by the logits.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "formats/open.h"
#include "model/export_gguf.h"
#include "model/layouts.h"
#include "model/loader.h"
#include "runtime/tokenizer_world.h"
#include "test_model_util.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::some_tokens;

using test::TempDir;

const std::string kLlamaGguf = "models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.gguf";
const std::string kLlamaPth = "models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.pth";

std::string quoted(const std::string& s) { return "'" + s + "'"; }

template <typename F>
void expect_error(F&& f, std::string_view needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string_view(e.what()).find(needle), std::string_view::npos) << e.what();
  }
}

// Every position's logits, the whole sequence in one call.
std::vector<float> logits(const Model& model, const std::vector<int32_t>& tokens) {
  return test::chunked_logits(model, tokens, int64_t(tokens.size()));
}

// A GGUF's metadata as written: key -> value type, array element type and the
// value's raw bytes. Walked here independently of formats/gguf.cpp, which
// keeps values but not their types.
struct RawValue {
  uint32_t type = 0, elem = 0;
  std::string bytes;
  bool operator==(const RawValue&) const = default;
};

std::map<std::string, RawValue> raw_metadata(const std::string& path) {
  const std::vector<char> f = test::read_bytes(path);
  size_t at = 0;
  auto take = [&](size_t n) {
    if (at + n > f.size()) throw std::runtime_error("truncated");
    std::string s(f.data() + at, n);
    at += n;
    return s;
  };
  auto u32 = [&] { uint32_t v; std::memcpy(&v, take(4).data(), 4); return v; };
  auto u64 = [&] { uint64_t v; std::memcpy(&v, take(8).data(), 8); return v; };
  auto size_of = [](uint32_t t) -> size_t {
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sizes[t] : 0;
  };
  EXPECT_EQ(take(4), "GGUF");
  EXPECT_EQ(u32(), 3u);
  u64();  // tensors
  const uint64_t n_kv = u64();
  std::map<std::string, RawValue> out;
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = take(u64());
    RawValue v;
    v.type = u32();
    const size_t start = at;
    if (v.type == 9) {
      v.elem = u32();
      const uint64_t n = u64();
      for (uint64_t k = 0; k < n; ++k) v.elem == 8 ? (void)take(u64()) : (void)take(size_of(v.elem));
    } else {
      v.type == 8 ? (void)take(u64()) : (void)take(size_of(v.type));
    }
    v.bytes.assign(f.data() + start, at - start);
    out[key] = v;
  }
  return out;
}

// Same names, shapes, types and bytes, tensor by tensor.
void expect_same_tensors(const TensorArchive& ours, const TensorArchive& theirs) {
  EXPECT_EQ(ours.tensors().size(), theirs.tensors().size());
  for (const TensorInfo& t : theirs.tensors()) {
    SCOPED_TRACE(t.name);
    const TensorInfo* o = ours.find(t.name);
    ASSERT_NE(o, nullptr) << "missing";
    EXPECT_EQ(o->shape, t.shape);
    EXPECT_EQ(o->dtype, t.dtype);
    ASSERT_EQ(o->nbytes, t.nbytes);
    EXPECT_EQ(std::memcmp(o->data, t.data, t.nbytes), 0) << "bytes differ";
  }
  for (const TensorInfo& o : ours.tensors()) EXPECT_TRUE(theirs.contains(o.name)) << "extra tensor " << o.name;
}

// ---- writer --------------------------------------------------------------------------

struct Owned {
  std::vector<std::vector<float>> data;
  std::vector<GgufTensor> tensors;
  void add(const std::string& name, std::vector<int64_t> shape, DType type, float start) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    auto& v = data.emplace_back(size_t(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = start + 0.1f * float(i);
    TensorInfo t;
    t.name = name;
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.data = reinterpret_cast<const std::byte*>(v.data());
    t.nbytes = size_t(n) * 4;
    tensors.push_back({t, type});
  }
};

TEST(GgufWriter, EveryMetadataTypeAndTensorReadsBack) {
  TempDir dir;
  const std::vector<GgufKeyValue> kv = {
      {"a.u32", uint32_t(4000000000u)},
      {"a.i32", int32_t(-7)},
      {"a.u64", uint64_t(1) << 40},
      {"a.f32", 0.25f},
      {"a.bool", true},
      {"a.string", std::string("h\xc3\xa9llo")},
      {"a.strings", std::vector<std::string>{"x", "", "\\x00"}},
      {"a.i32s", std::vector<int32_t>{3, -1, 5}},
      {"a.f32s", std::vector<float>{1.5f, -2.0f}},
  };
  Owned t;
  t.add("vec", {5}, DType::F32, 1.0f);
  t.add("mat.bf16", {3, 7}, DType::BF16, -1.0f);
  t.add("mat.f16", {2, 3}, DType::F16, 2.0f);
  t.add("four.d", {2, 1, 1, 3}, DType::F32, 0.0f);
  size_t last_done = 0, last_total = 0;
  GgufWriteOptions options;
  options.progress = [&](size_t done, size_t total) { last_done = done, last_total = total; };
  write_gguf(dir / "a.gguf", kv, t.tensors, options);
  EXPECT_EQ(last_done, last_total);
  EXPECT_EQ(last_total, size_t(5 * 4 + 21 * 2 + 6 * 2 + 6 * 4));

  const TensorArchive a = read_gguf(dir / "a.gguf");
  EXPECT_EQ(a.metadata.at("gguf.version"), "3");
  EXPECT_EQ(a.metadata.at("gguf.alignment"), "32");
  EXPECT_EQ(a.metadata.count("general.alignment"), 0u);  // the default is not written
  EXPECT_EQ(a.metadata.at("a.u32"), "4000000000");
  EXPECT_EQ(a.metadata.at("a.i32"), "-7");
  EXPECT_EQ(a.metadata.at("a.u64"), "1099511627776");
  EXPECT_EQ(a.metadata.at("a.f32"), "0.25");
  EXPECT_EQ(a.metadata.at("a.bool"), "true");
  EXPECT_EQ(a.metadata.at("a.string"), "h\xc3\xa9llo");
  EXPECT_EQ(a.string_lists.at("a.strings"), (std::vector<std::string>{"x", "", "\\x00"}));
  EXPECT_EQ(a.number_lists.at("a.i32s"), (std::vector<double>{3, -1, 5}));
  EXPECT_EQ(a.number_lists.at("a.f32s"), (std::vector<double>{1.5, -2.0}));
  const auto raw = raw_metadata(dir / "a.gguf");
  const std::pair<const char*, uint32_t> types[] = {{"a.u32", 4}, {"a.i32", 5},  {"a.u64", 10},
                                                    {"a.f32", 6}, {"a.bool", 7}, {"a.string", 8}};
  for (auto [key, type] : types) EXPECT_EQ(raw.at(key).type, type) << key;
  EXPECT_EQ(raw.at("a.strings").elem, 8u);
  EXPECT_EQ(raw.at("a.i32s").elem, 5u);
  EXPECT_EQ(raw.at("a.f32s").elem, 6u);

  ASSERT_EQ(a.tensors().size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const TensorInfo& r = a.tensors()[i];
    const GgufTensor& w = t.tensors[i];
    SCOPED_TRACE(r.name);
    EXPECT_EQ(r.name, w.source.name);
    EXPECT_EQ(r.shape, w.source.shape);
    EXPECT_EQ(r.dtype, w.type);
    std::vector<float> back(size_t(r.numel()));
    convert_to_f32(r.dtype, r.data, back.data(), back.size());
    for (size_t k = 0; k < back.size(); ++k) {
      const float x = t.data[i][k];
      const float expected = w.type == DType::BF16 ? bf16_to_f32(f32_to_bf16(x))
                             : w.type == DType::F16 ? f16_to_f32(f32_to_f16(x))
                                                    : x;
      EXPECT_EQ(back[k], expected) << k;
    }
  }
}

TEST(GgufWriter, OtherAlignmentsAreRecordedAndKept) {
  TempDir dir;
  Owned t;
  t.add("odd", {3}, DType::F32, 1.0f);
  t.add("next", {5}, DType::BF16, 2.0f);
  GgufWriteOptions options;
  options.alignment = 256;
  write_gguf(dir / "a.gguf", {}, t.tensors, options);
  const TensorArchive a = read_gguf(dir / "a.gguf");  // the reader checks every offset against the alignment
  EXPECT_EQ(a.metadata.at("gguf.alignment"), "256");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.find("next")->data) % 256, 0u);
  EXPECT_EQ(test::read_bytes(dir / "a.gguf").size() % 256, 0u);
}

TEST(GgufWriter, RefusesBadInputAndLeavesNoFile) {
  TempDir dir;
  Owned t;
  t.add("x", {4}, DType::F32, 1.0f);
  t.add("x", {4}, DType::F32, 1.0f);
  expect_error([&] { write_gguf(dir / "dup.gguf", {}, t.tensors); }, "duplicate tensor 'x'");
  Owned five;
  five.add("five", {1, 1, 1, 1, 2}, DType::F32, 1.0f);
  expect_error([&] { write_gguf(dir / "five.gguf", {}, five.tensors); }, "5 dimensions");
  Owned q;
  q.add("q", {32}, DType::Q8_0, 1.0f);
  expect_error([&] { write_gguf(dir / "q.gguf", {}, q.tensors); }, "cannot be written as q8_0");
  const std::vector<GgufKeyValue> twice = {{"k", uint32_t(1)}, {"k", uint32_t(2)}};
  expect_error([&] { write_gguf(dir / "kv.gguf", twice, {}); }, "duplicate GGUF metadata key 'k'");
  GgufWriteOptions odd;
  odd.alignment = 48;
  expect_error([&] { write_gguf(dir / "align.gguf", {}, {}, odd); }, "not a power of two");
  EXPECT_EQ(dir.file_count(), 0u);
  expect_error([&] { write_gguf(dir / "no/such/dir/a.gguf", {}, {}); }, "no/such/dir");
}

// ---- export: the pieces -------------------------------------------------------------

TEST(GgufExport, TokensArePythonBytesReprsAndSizesGgufPyLabels) {
  EXPECT_EQ(python_bytes_repr("abc"), "abc");
  EXPECT_EQ(python_bytes_repr(std::string("\0\x1f\x7f\xff", 4)), "\\x00\\x1f\\x7f\\xff");
  EXPECT_EQ(python_bytes_repr("\t\n\r\\"), "\\t\\n\\r\\\\");
  EXPECT_EQ(python_bytes_repr("it's"), "it's");        // repr picks double quotes: ' stays
  EXPECT_EQ(python_bytes_repr("'\""), "\\'\"");        // both: single quotes, ' escaped
  EXPECT_EQ(python_bytes_repr("\"x\""), "\"x\"");
  EXPECT_EQ(python_bytes_repr("\xe4\xb8\x96"), "\\xe4\\xb8\\x96");
  EXPECT_EQ(gguf_size_label(8534656), "8.5M");  // the shared llama.cpp GGUF's
  EXPECT_EQ(gguf_size_label(1000001), "1.0M");
  EXPECT_EQ(gguf_size_label(95000), "95K");
  EXPECT_EQ(gguf_size_label(834000), "834K");
  EXPECT_EQ(gguf_size_label(1600000000), "1.6B");
  EXPECT_EQ(gguf_size_label(7615616512), "7.6B");
  EXPECT_EQ(gguf_size_label(14000000000), "14B");
  EXPECT_EQ(gguf_size_label(999), "1.0K");
}

// ---- export: against llama.cpp's converter ---------------------------------------------

TEST(GgufExport, SharedPthGivesWhatLlamaCppsConverterWrote) {
  TempDir dir;
  const std::string pth = test::shared_path(kLlamaPth), theirs_path = test::shared_path(kLlamaGguf);
  // The World vocabulary is found beside the shared models (../../tokenizers).
  const test::CommandResult r = test::run_cli("convert -m " + quoted(pth) + " -o " + quoted(dir / "out.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("100%"), std::string::npos) << r.output;
  const auto ours = open_tensor_archive(dir / "out.gguf");
  const auto theirs = open_tensor_archive(theirs_path);
  expect_same_tensors(*ours, *theirs);

  // Metadata: every key llama.cpp wrote, with its value type and bytes; only
  // the model's name (its folder's, "Hf") and the chat template (llama.cpp's
  // template file; we write the name of its built-in equivalent) differ.
  const auto our_kv = raw_metadata(dir / "out.gguf"), their_kv = raw_metadata(theirs_path);
  EXPECT_EQ(our_kv.size(), their_kv.size());
  for (const auto& [key, value] : their_kv) {
    SCOPED_TRACE(key);
    ASSERT_TRUE(our_kv.count(key)) << "missing key";
    if (key == "general.name" || key == "tokenizer.chat_template") {
      EXPECT_EQ(our_kv.at(key).type, value.type);
      continue;
    }
    EXPECT_EQ(our_kv.at(key), value);
  }
  EXPECT_EQ(ours->metadata.at("general.name"), "rand-v7-L2-C64-hs64-V65536-bf16");
  EXPECT_EQ(ours->metadata.at("tokenizer.chat_template"), "rwkv-world");

  // The tokenizer reads back as the World vocabulary file.
  const std::string vocab = world_vocab_from_gguf(*ours);
  EXPECT_EQ(vocab, world_vocab_from_gguf(*theirs));
  const WorldTokenizer from_gguf = WorldTokenizer::parse(vocab, "out.gguf");
  const WorldTokenizer from_file = WorldTokenizer::load(test::shared_path("tokenizers/rwkv_vocab_v20230424.txt"));
  ASSERT_EQ(from_gguf.vocab_size(), from_file.vocab_size());
  for (int32_t id = 1; id < from_file.vocab_size(); ++id)
    ASSERT_EQ(from_gguf.token_bytes(id), from_file.token_bytes(id)) << id;

  // Logits: the same bytes give the same numbers; and the .pth's, exactly.
  const auto tokens = some_tokens(65536, 24, 7);
  const auto a = logits(*load_model(dir / "out.gguf"), tokens);
  EXPECT_EQ(test::max_abs_diff(a, logits(*load_model(theirs_path), tokens)), 0.0f);
  EXPECT_EQ(test::max_abs_diff(a, logits(*load_model(pth), tokens)), 0.0f);
  EXPECT_EQ(dir.file_count(), 1u);
}

TEST(GgufExport, GgufToGgufKeepsEveryTensorAndTheVocabulary) {
  TempDir dir;
  // A llama.cpp GGUF in, its vocabulary taken from its own metadata.
  const std::string theirs_path = test::shared_path(kLlamaGguf);
  ASSERT_EQ(test::run_cli("convert -m " + quoted(theirs_path) + " -o " + quoted(dir / "a.gguf") +
                          " --vocab none").exit_code, 0);
  const auto none = open_tensor_archive(dir / "a.gguf");
  EXPECT_EQ(none->metadata.at("tokenizer.ggml.model"), "none");
  EXPECT_EQ(none->metadata.at("rwkv7.vocab_size"), "65536");
  const test::CommandResult r = test::run_cli("convert -m " + quoted(theirs_path) + " -o " + quoted(dir / "b.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ours = open_tensor_archive(dir / "b.gguf");
  expect_same_tensors(*ours, *open_tensor_archive(theirs_path));
  EXPECT_EQ(ours->string_lists.at("tokenizer.ggml.tokens"),
            open_tensor_archive(theirs_path)->string_lists.at("tokenizer.ggml.tokens"));
  // Quantized matrices stay as their blocks (and general.file_type says which).
  const std::string q8 = test::fixture_path("gguf-quant/rand-v7-q8_0.gguf");
  ASSERT_EQ(test::run_cli("convert -m " + quoted(q8) + " -o " + quoted(dir / "q.gguf")).exit_code, 0);
  const auto q = open_tensor_archive(dir / "q.gguf");
  expect_same_tensors(*q, *open_tensor_archive(q8));
  EXPECT_EQ(q->metadata.at("general.file_type"), "7");
}

// RWKV-6: against fixtures_formats.py's rendering of what convert_hf_to_gguf.py
// writes (rescale_every 2, so layers 2 and 3 are divided by 2), and against
// the quantized fixtures made from it, whose block scales must come back halved.
TEST(GgufExport, Rwkv6MatchesTheLlamaCppLayoutIncludingRescaling) {
  TempDir dir;
  const std::string pth = test::fixture_path("formats/rand-v6-llamacpp.pth");
  const auto official = open_tensor_archive(pth);
  const auto model = load_model(official);
  GgufExportOptions options;
  options.rescale_every = 2;
  const GgufExport e = export_gguf(official, model->config(), options);
  write_gguf(dir / "v6.gguf", e.metadata, e.tensors);
  const std::string theirs = test::fixture_path("formats/rand-v6-llamacpp.gguf");
  expect_same_tensors(*open_tensor_archive(dir / "v6.gguf"), *open_tensor_archive(theirs));
  const auto our_kv = raw_metadata(dir / "v6.gguf");
  for (const auto& [key, value] : raw_metadata(theirs)) {
    if (key == "general.name") continue;
    ASSERT_TRUE(our_kv.count(key)) << key;
    EXPECT_EQ(our_kv.at(key), value) << key;
  }
  const auto tokens = some_tokens(300, 24, 5);
  EXPECT_EQ(test::max_abs_diff(logits(*load_model(dir / "v6.gguf"), tokens), logits(*model, tokens)), 0.0f);

  for (const char* type : {"q8_0", "q4_1"}) {
    SCOPED_TRACE(type);
    const std::string q = test::fixture_path(std::string("gguf-quant/rand-v6-") + type + ".gguf");
    const auto source = to_official_layout(open_tensor_archive(q));
    const GgufExport qe = export_gguf(source, load_model(source)->config(), options);
    write_gguf(dir / "q.gguf", qe.metadata, qe.tensors);
    expect_same_tensors(*open_tensor_archive(dir / "q.gguf"), *open_tensor_archive(q));
  }
}

TEST(GgufExport, BadInputIsAClearErrorAndNoFileIsLeft) {
  TempDir dir;
  auto expect_failure = [&](const std::string& args, std::string_view word) {
    const test::CommandResult r = test::run_cli("convert " + args);
    EXPECT_EQ(r.exit_code, 1) << args << ": " << r.output;
    EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(word), std::string::npos) << args << ": " << r.output;
  };
  const std::string v7 = test::fixture_path("rwkv7/rand-v7-L4-C128-hs32-V512-bf16.pth");
  // Versions llama.cpp has no architecture for.
  expect_failure("-m " + quoted(test::fixture_path("versions/rand-v5.2-L2-C128-hs64-V400-bf16.pth")) + " -o " +
                     quoted(dir / "out.gguf"),
                 "RWKV-5.2 has no llama.cpp GGUF architecture");
  expect_failure("-m " + quoted(test::tiny_model("4v0-660K", "FP32")) + " -o " + quoted(dir / "out.gguf"),
                 "RWKV-4 has no llama.cpp GGUF architecture");
  expect_failure("-m " + quoted(test::fixture_path("rwkv7/rand-v7a-deepembed-L3-C128-hs32-V512-bf16.pth")) + " -o " +
                     quoted(dir / "out.gguf"),
                 "DeepEmbed");
  // Unwritable places: a folder that does not exist, a "folder" that is a file.
  expect_failure("-m " + quoted(v7) + " -o " + quoted(dir / "no/such/dir/out.gguf"), "no/such/dir");
  test::write_bytes(dir / "file", {'x'});
  expect_failure("-m " + quoted(v7) + " -o " + quoted(dir / "file/out.gguf"), "file/out.gguf");
  // A vocabulary that is not there, and a matrix type GGUF export does not make.
  expect_failure("-m " + quoted(v7) + " -o " + quoted(dir / "out.gguf") + " --vocab " + quoted(dir / "nope.txt"),
                 "nope.txt");
  expect_failure("-m " + quoted(v7) + " -o " + quoted(dir / "out.gguf") + " --format ggml", "--format must be");
  // A failed conversion leaves an existing output as it was.
  test::write_bytes(dir / "out.gguf", {'k', 'e', 'e', 'p'});
  expect_failure("-m " + quoted(test::tiny_model("5v2-730K", "FP32")) + " -o " + quoted(dir / "out.gguf"),
                 "RWKV-5.2");
  EXPECT_EQ(test::read_bytes(dir / "out.gguf"), (std::vector<char>{'k', 'e', 'e', 'p'}));
  EXPECT_EQ(dir.file_count(), 2u);  // file and out.gguf: no temporary left behind
}

}  // namespace
}  // namespace rwkv
