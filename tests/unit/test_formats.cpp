// Tests of the file formats beyond .pth reading: the torch.save writer, GGUF,
// safetensors, the Hugging Face / llama.cpp layout mapping and `rwkv convert`.
// Fixtures come from tests/reference/fixtures_formats.py (OUT/formats/).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "formats/open.h"
#include "formats/pth.h"
#include "formats/pth_writer.h"
#include "formats/rwkvcpp.h"
#include "formats/safetensors.h"
#include "model/layouts.h"
#include "model/loader.h"
#include "runtime/tokenizer_world.h"
#include "test_model_util.h"
#include "test_util.h"

#include <zlib.h>

namespace rwkv {
namespace {

using test::chunked_logits;
using test::some_tokens;

using test::TempDir;

// Expects `fn` to throw rwkv::Error whose message contains `word`.
void expect_error(const std::function<void()>& fn, std::string_view word) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << word << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string_view(e.what()).find(word), std::string_view::npos) << "message: " << e.what();
  }
}

// Tensors with owned data, for writers.
struct OwnedTensors {
  std::vector<TensorInfo> infos;
  std::vector<std::vector<std::byte>> buffers;

  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, uint32_t seed) {
    TensorInfo t;
    t.name = name;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.nbytes = size_t(t.numel()) * dtype_size(dtype);
    auto& b = buffers.emplace_back(t.nbytes);
    // Arbitrary bit patterns (a small LCG), NaNs and all: writers must copy bits, not values.
    uint32_t x = seed * 2654435761u + 1;
    for (auto& byte : b) {
      x = x * 1664525u + 1013904223u;
      byte = std::byte(x >> 24);
    }
    t.data = b.empty() ? nullptr : b.data();
    infos.push_back(std::move(t));
  }
};

OwnedTensors sample_tensors() {
  OwnedTensors s;
  s.add("emb.weight", DType::BF16, {7, 5}, 1);
  s.add("blocks.0.att.x_r", DType::BF16, {1, 1, 5}, 2);
  s.add("blocks.0.ln1.weight", DType::F32, {5}, 3);
  s.add("half", DType::F16, {3, 2, 2}, 4);
  s.add("scalar", DType::F32, {}, 5);
  s.add("empty", DType::F16, {0}, 6);
  s.add("empty2d", DType::BF16, {2, 0}, 7);
  s.add("big.ints", DType::F32, {300, 70}, 8);  // shape values past BININT1/BININT2
  s.add("ünïcödé.name", DType::F32, {2}, 9);
  return s;
}

void expect_same_tensors(const TensorArchive& a, std::span<const TensorInfo> expected) {
  ASSERT_EQ(a.tensors().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const TensorInfo& got = a.tensors()[i];
    const TensorInfo& want = expected[i];
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.name, want.name);  // order kept
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.shape, want.shape);
    ASSERT_EQ(got.nbytes, want.nbytes);
    if (want.nbytes != 0) {
      EXPECT_EQ(std::memcmp(got.data, want.data, want.nbytes), 0);
    }
  }
}

// CRC-32 of the bytes: enough to tell bit-exact copies from anything else.
uint32_t crc_of(const std::byte* p, size_t n) {
  return uint32_t(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(p), uInt(n)));
}

// torch.load's view of files: per file, a line with the container's type, then
// one line per tensor, "name dtype shape crc32". `dir` holds the script. One
// Python run for all files, as importing torch takes seconds.
std::string python_output(const TempDir& dir, const std::string& script, const std::vector<std::string>& paths) {
  test::write_bytes(dir / "list.py", std::vector<char>(script.begin(), script.end()));
  std::string cmd = "/usr/bin/python3 " + (dir / "list.py");
  for (const std::string& p : paths) cmd += " '" + p + "'";
  cmd += " 2>&1";
  std::string out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return "popen failed";
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  ::pclose(pipe);
  return out;
}

std::string torch_listing(const TempDir& dir, const std::vector<std::string>& paths) {
  return python_output(dir,
                       "import sys, zlib\n"
                       "try:\n"
                       "    import torch\n"
                       "except ImportError:\n"
                       "    print('no torch')\n"
                       "    sys.exit(0)\n"
                       "iv = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}\n"
                       "for path in sys.argv[1:]:\n"
                       "    sd = torch.load(path, map_location='cpu')\n"
                       "    print(type(sd).__name__)\n"
                       "    for k, v in sd.items():\n"
                       "        b = zlib.crc32(v.contiguous().reshape(-1).view(iv[v.dtype]).numpy().tobytes())\n"
                       "        print(k, str(v.dtype).replace('torch.', ''), list(v.shape), b)\n",
                       paths);
}

// The same listing from a few lines of Python that follow the safetensors
// specification (no library), with "format" from __metadata__ first.
std::string safetensors_listing(const TempDir& dir, const std::string& path) {
  return python_output(dir,
                       "import sys, json, struct, zlib\n"
                       "b = open(sys.argv[1], 'rb').read()\n"
                       "n, = struct.unpack('<Q', b[:8])\n"
                       "h = json.loads(b[8:8 + n])\n"
                       "print(h.pop('__metadata__')['format'])\n"
                       "names = {'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16'}\n"
                       "for k, v in h.items():\n"
                       "    s, e = v['data_offsets']\n"
                       "    print(k, names[v['dtype']], v['shape'], zlib.crc32(b[8 + n + s:8 + n + e]))\n",
                       {path});
}

std::string expected_listing(std::span<const TensorInfo> tensors) {
  std::string s = "OrderedDict\n";
  for (const TensorInfo& t : tensors) {
    const char* name = t.dtype == DType::F32 ? "float32" : t.dtype == DType::F16 ? "float16" : "bfloat16";
    std::string shape = "[";
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
    s += t.name + " " + name + " " + shape + "] " + std::to_string(crc_of(t.data, t.nbytes)) + "\n";
  }
  return s;
}

// ---- torch.save writer ---------------------------------------------------------------

TEST(PthWriter, RoundTripsBitExactThroughReadPth) {
  TempDir dir;
  const OwnedTensors s = sample_tensors();
  for (bool zip64 : {false, true}) {
    SCOPED_TRACE(zip64 ? "zip64" : "zip32");
    const std::string path = dir / (zip64 ? "z64.pth" : "z32.pth");
    size_t last_done = 0, last_total = 0;
    PthWriteOptions options;
    options.force_zip64 = zip64;
    options.progress = [&](size_t done, size_t total) {
      EXPECT_GE(done, last_done);
      last_done = done;
      last_total = total;
    };
    write_pth(path, s.infos, options);
    size_t total = 0;
    for (const auto& t : s.infos) total += t.nbytes;
    EXPECT_EQ(last_done, total);
    EXPECT_EQ(last_total, total);
    const TensorArchive a = read_pth(path);
    expect_same_tensors(a, s.infos);
    // Like torch, every tensor's data starts 64-byte aligned in the file (so it is
    // used in place from the mapping).
    const auto file = MappedFile::open(path);
    for (const TensorInfo& t : a.tensors()) {
      if (t.nbytes == 0) continue;
      const std::ptrdiff_t off = t.data - file->data();
      EXPECT_EQ(off % 64, 0) << t.name;
    }
  }
}

TEST(PthWriter, TorchLoadReadsTheSameBits) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  TempDir dir;
  const OwnedTensors s = sample_tensors();
  PthWriteOptions options;
  write_pth(dir / "model.pth", s.infos, options);
  options.force_zip64 = true;
  write_pth(dir / "zip64.pth", s.infos, options);
  const std::string listing = torch_listing(dir, {dir / "model.pth", dir / "zip64.pth"});
  if (listing == "no torch\n") GTEST_SKIP() << "/usr/bin/python3 has no torch";
  EXPECT_EQ(listing, expected_listing(s.infos) + expected_listing(s.infos));
}

TEST(PthWriter, RefusesBadInputAndLeavesNoFile) {
  TempDir dir;
  OwnedTensors s = sample_tensors();
  s.add("emb.weight", DType::F32, {1}, 10);
  expect_error([&] { write_pth(dir / "dup.pth", s.infos); }, "duplicate");
  OwnedTensors t = sample_tensors();
  t.infos[0].nbytes -= 2;
  expect_error([&] { write_pth(dir / "size.pth", t.infos); }, "bytes");
  OwnedTensors u = sample_tensors();
  u.infos[0].shape[0] = -1;
  expect_error([&] { write_pth(dir / "shape.pth", u.infos); }, "shape");
  expect_error([&] { write_pth(dir / "no-such-dir/x.pth", s.infos); }, "no-such-dir");
  EXPECT_EQ(dir.file_count(), 0u);
}

// ---- safetensors ---------------------------------------------------------------------

TEST(Safetensors, RoundTripsBitExactAlignedAndInPlace) {
  TempDir dir;
  const OwnedTensors s = sample_tensors();
  SafetensorsWriteOptions options;
  options.metadata = {{"format", "pt"}, {"note", "ünï"}};
  size_t last = 0;
  options.progress = [&](size_t done, size_t) { last = done; };
  write_safetensors(dir / "m.safetensors", s.infos, options);
  const TensorArchive a = read_safetensors(dir / "m.safetensors");
  EXPECT_EQ(a.format, "safetensors");
  expect_same_tensors(a, s.infos);  // header order = the order given
  EXPECT_EQ(a.metadata.at("format"), "pt");
  EXPECT_EQ(a.metadata.at("note"), "ünï");
  // Read in place: every tensor lies within one file-sized span of memory
  // (copies would be separate allocations), aligned to its element size.
  const std::byte* lowest = nullptr;
  size_t total = 0;
  for (const TensorInfo& t : a.tensors()) {
    total += t.nbytes;
    if (t.nbytes != 0 && (lowest == nullptr || t.data < lowest)) lowest = t.data;
  }
  const size_t file_size = std::filesystem::file_size(dir / "m.safetensors");
  for (const TensorInfo& t : a.tensors()) {
    if (t.nbytes == 0) continue;
    EXPECT_LE(size_t(t.data - lowest) + t.nbytes, file_size) << t.name << " is not read in place";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u) << t.name;
  }
  EXPECT_EQ(last, total);
  EXPECT_EQ(open_tensor_archive(dir / "m.safetensors")->format, "safetensors");
}

TEST(Safetensors, PlainPythonReadsOurFile) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  TempDir dir;
  const OwnedTensors s = sample_tensors();
  SafetensorsWriteOptions options;
  options.metadata = {{"format", "pt"}};
  write_safetensors(dir / "m.safetensors", s.infos, options);
  std::string expected = expected_listing(s.infos);
  expected.replace(0, expected.find('\n'), "pt");
  EXPECT_EQ(safetensors_listing(dir, dir / "m.safetensors"), expected);
}

TEST(Safetensors, ReadsTheFixtureScriptsFile) {
  // Written by tests/reference/fixtures_formats.py with its own writer, from
  // the same weights as the .pth beside it.
  const TensorArchive st = read_safetensors(test::fixture_path("formats/rand-v7-official.safetensors"));
  const TensorArchive pth = read_pth(test::fixture_path("formats/rand-v7-official.pth"));
  ASSERT_EQ(st.tensors().size(), pth.tensors().size());
  for (const TensorInfo& t : pth.tensors()) {
    const TensorInfo* u = st.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->shape, t.shape) << t.name;
    EXPECT_EQ(u->dtype, t.dtype) << t.name;
    ASSERT_EQ(u->nbytes, t.nbytes);
    EXPECT_EQ(std::memcmp(u->data, t.data, t.nbytes), 0) << t.name;
  }
}

std::vector<char> st_file(const std::string& header, size_t data_bytes, uint64_t claimed = ~uint64_t(0)) {
  // One allocation of the final size (growing the vector with insert trips
  // GCC 12's -Warray-bounds false positive).
  std::vector<char> b(8 + header.size() + data_bytes, 1);
  const uint64_t n = claimed == ~uint64_t(0) ? header.size() : claimed;
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

TEST(Safetensors, HostileFilesAreClearErrors) {
  TempDir dir;
  auto expect_bad = [&](const std::vector<char>& bytes, std::string_view word) {
    test::write_bytes(dir / "bad.safetensors", bytes);
    expect_error([&] { read_safetensors(dir / "bad.safetensors"); }, word);
  };
  const std::string a = R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";
  const std::string b = R"("b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]})";
  const std::vector<char> good = st_file("{" + a + "," + b + "}", 32);
  test::write_bytes(dir / "good.safetensors", good);
  ASSERT_EQ(read_safetensors(dir / "good.safetensors").tensors().size(), 2u);

  for (size_t cut = 0; cut < good.size(); ++cut) {
    test::write_bytes(dir / "cut.safetensors", std::vector<char>(good.begin(), good.begin() + std::ptrdiff_t(cut)));
    expect_error([&] { read_safetensors(dir / "cut.safetensors"); }, "truncated");
  }
  expect_bad(st_file("{" + a + "," + b + "}", 32, uint64_t(1) << 63), "header claims");
  expect_bad(st_file("{" + a + "," + b + "}", 32, 5), "not valid JSON");
  expect_bad(st_file("[1, 2]", 0), "not an object");
  expect_bad(st_file("{" + a + "," + b + "," + a + "}", 32), "duplicate tensor 'a'");
  expect_bad(st_file(R"({"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})", 2), "dtype I8");
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20), "needs 24 bytes");
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[-2,3],"data_offsets":[0,24]}})", 24), "non-negative");
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", 0),
             "larger than the file");
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,0]}})", 8),
             "non-negative");
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 8), "outside");
  expect_bad(st_file("{" + a + "," + R"("b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]}})", 32), "overlap");
  expect_bad(st_file("{" + a + "," + R"("b":{"dtype":"F16","shape":[4],"data_offsets":[28,36]}})", 36), "hole");
  expect_bad(st_file("{" + a + "," + b + "}", 40), "belong to no tensor");
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "data_offsets");
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), "data_offsets");
  expect_bad(st_file(R"({"__metadata__":{"k":1},)" + a + "}", 24), "not a string");
  expect_bad(st_file(R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", 8), "dtype");
  // Not recognised as safetensors at all: open says so instead of guessing.
  test::write_bytes(dir / "junk.bin", std::vector<char>{'\x10', 0, 0, 0, 0, 0, 0, 0, '[', ']', ' ', ' '});
  expect_error([&] { open_tensor_archive(dir / "junk.bin"); }, "unrecognised");
}

TEST(Safetensors, WriterRefusesBadInputAndLeavesNoFile) {
  TempDir dir;
  OwnedTensors s = sample_tensors();
  s.add("half", DType::F32, {1}, 11);
  expect_error([&] { write_safetensors(dir / "dup.safetensors", s.infos); }, "duplicate");
  OwnedTensors t;
  t.add("__metadata__", DType::F32, {1}, 1);
  expect_error([&] { write_safetensors(dir / "meta.safetensors", t.infos); }, "__metadata__");
  OwnedTensors u;
  u.add(std::string("bad\xff"), DType::F32, {1}, 1);
  expect_error([&] { write_safetensors(dir / "utf8.safetensors", u.infos); }, "UTF-8");
  EXPECT_EQ(dir.file_count(), 0u);
}

// ---- GGUF reader ---------------------------------------------------------------------

const std::string kSharedGguf = "models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.gguf";
const std::string kSharedPth = "models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.pth";

TEST(Gguf, ReadsLlamaCppsFile) {
  const TensorArchive a = read_gguf(test::shared_path(kSharedGguf));
  EXPECT_EQ(a.format, "gguf");
  EXPECT_EQ(a.metadata.at("gguf.version"), "3");
  EXPECT_EQ(a.metadata.at("gguf.alignment"), "32");
  EXPECT_EQ(a.metadata.at("general.architecture"), "rwkv7");
  EXPECT_EQ(a.metadata.at("rwkv7.block_count"), "2");
  EXPECT_EQ(a.metadata.at("rwkv7.wkv.head_size"), "64");
  EXPECT_EQ(a.metadata.at("tokenizer.ggml.model"), "rwkv");
  EXPECT_EQ(a.metadata.at("rwkv7.attention.layer_norm_epsilon"), "1e-05");
  const auto& tokens = a.string_lists.at("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 65536u);
  EXPECT_EQ(tokens[0], "<s>");
  EXPECT_EQ(tokens[1], "\\x00");  // llama.cpp stores repr(bytes) without the b'' quotes
  EXPECT_EQ(a.number_lists.at("tokenizer.ggml.token_type").size(), 65536u);
  EXPECT_EQ(a.tensors().size(), 62u);

  const TensorInfo* emb = a.find("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::BF16);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{65536, 64}));  // ggml ne = [64, 65536]
  const TensorInfo* w1 = a.find("blk.0.time_mix_w1.weight");
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->dtype, DType::F32);
  EXPECT_EQ(w1->shape, (std::vector<int64_t>{32, 64}));
  const TensorInfo* lerp = a.find("blk.1.time_mix_lerp_fused.weight");
  ASSERT_NE(lerp, nullptr);
  EXPECT_EQ(lerp->shape, (std::vector<int64_t>{6, 1, 1, 64}));

  // The embedding is the .pth's, bit for bit, read in place from the mapping.
  const TensorArchive pth = read_pth(test::shared_path(kSharedPth));
  const TensorInfo* pemb = pth.find("emb.weight");
  ASSERT_NE(pemb, nullptr);
  ASSERT_EQ(pemb->nbytes, emb->nbytes);
  EXPECT_EQ(std::memcmp(pemb->data, emb->data, emb->nbytes), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(emb->data) % 32, 0u);
}

TEST(Gguf, OpenRecognisesItByContent) {
  TempDir dir;
  const auto bytes = test::read_bytes(test::shared_path(kSharedGguf));
  test::write_bytes(dir / "model.bin", bytes);  // the extension says nothing
  EXPECT_EQ(open_tensor_archive(dir / "model.bin")->format, "gguf");
}

// A small GGUF built by hand, independently of the reader, for hostile variants.
class GgufBuilder {
 public:
  std::vector<char> out;
  void u8(uint8_t v) { out.push_back(char(v)); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    out.insert(out.end(), s.begin(), s.end());
  }
  void raw(const void* p, size_t n) { out.insert(out.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n); }
  void pad(size_t alignment) {
    while (out.size() % alignment) out.push_back(0);
  }
};

struct GgufSpec {
  uint32_t version = 3;
  uint32_t alignment = 32;
  bool write_alignment = true;
  uint32_t tensor_type = 0;  // of the second tensor
  uint64_t second_offset = 64;
  std::string second_name = "b";
  uint64_t first_dim = 4;
  uint32_t a_dims = 2;
  std::string third_key = "some.ints";
  uint32_t ints_type = 5;  // int32
};

// Two tensors: "a" f32 [3, 4] (ggml ne [4, 3]) at 0 and `second_name` f16 [5] at
// second_offset; plus a string, an array of strings and an array of ints.
std::vector<char> make_gguf(const GgufSpec& spec = {}) {
  GgufBuilder b;
  b.raw("GGUF", 4);
  b.u32(spec.version);
  b.u64(2);                                  // tensors
  b.u64(spec.write_alignment ? 4 : 3);       // metadata entries
  b.str("general.architecture");
  b.u32(8);
  b.str("test");
  b.str("tokenizer.ggml.tokens");
  b.u32(9);
  b.u32(8);
  b.u64(3);
  for (const char* t : {"x", "", "zz"}) b.str(t);
  b.str(spec.third_key);
  b.u32(9);
  b.u32(spec.ints_type);
  b.u64(2);
  b.u32(uint32_t(-7));
  b.u32(9);
  if (spec.write_alignment) {
    b.str("general.alignment");
    b.u32(4);
    b.u32(spec.alignment);
  }
  b.str("a");
  b.u32(spec.a_dims);
  b.u64(spec.first_dim);
  b.u64(3);
  for (uint32_t d = 2; d < spec.a_dims; ++d) b.u64(1);
  b.u32(0);
  b.u64(0);
  b.str(spec.second_name);
  b.u32(1);
  b.u64(5);
  b.u32(spec.tensor_type == 0 ? 1 : spec.tensor_type);
  b.u64(spec.second_offset);
  b.pad(spec.alignment == 0 ? 32 : spec.alignment);
  const size_t data = b.out.size();
  for (int i = 0; i < 12; ++i) {
    const float f = float(i) + 0.5f;
    b.raw(&f, 4);
  }
  while (b.out.size() < data + 64) b.u8(0);
  for (int i = 0; i < 5; ++i) {
    const uint16_t h = f32_to_f16(float(-i));
    b.raw(&h, 2);
  }
  return b.out;
}

TEST(Gguf, ReadsAHandBuiltFile) {
  TempDir dir;
  test::write_bytes(dir / "ok.gguf", make_gguf());
  const TensorArchive a = read_gguf(dir / "ok.gguf");
  EXPECT_EQ(a.metadata.at("general.architecture"), "test");
  EXPECT_EQ(a.string_lists.at("tokenizer.ggml.tokens"), (std::vector<std::string>{"x", "", "zz"}));
  EXPECT_EQ(a.number_lists.at("some.ints"), (std::vector<double>{-7, 9}));
  ASSERT_EQ(a.tensors().size(), 2u);
  EXPECT_EQ(a.tensors()[0].shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(reinterpret_cast<const float*>(a.tensors()[0].data)[11], 11.5f);
  EXPECT_EQ(a.tensors()[1].dtype, DType::F16);
  EXPECT_EQ(f16_to_f32(reinterpret_cast<const uint16_t*>(a.tensors()[1].data)[4]), -4.0f);
  // Without general.alignment, GGUF's default of 32 applies.
  GgufSpec spec;
  spec.write_alignment = false;
  test::write_bytes(dir / "default.gguf", make_gguf(spec));
  EXPECT_EQ(read_gguf(dir / "default.gguf").metadata.at("gguf.alignment"), "32");
}

TEST(Gguf, TruncatedAnywhereIsAClearError) {
  TempDir dir;
  const std::vector<char> good = make_gguf();
  for (size_t cut = 0; cut < good.size(); ++cut) {
    test::write_bytes(dir / "cut.gguf", std::vector<char>(good.begin(), good.begin() + std::ptrdiff_t(cut)));
    try {
      read_gguf(dir / "cut.gguf");
      ADD_FAILURE() << "no error at cut " << cut;
    } catch (const Error& e) {
      const std::string_view m = e.what();
      EXPECT_TRUE(m.find("truncated") != m.npos || m.find("magic") != m.npos) << "cut " << cut << ": " << m;
    }
  }
}

TEST(Gguf, LlamaCppsFileTruncatedAnywhereIsAClearError) {
  TempDir dir;
  const auto bytes = test::read_bytes(test::shared_path(kSharedGguf));
  // 60 cuts through the 1.4 MB header (metadata, 65536 tokens, tensor infos)
  // and 20 through the data.
  std::vector<size_t> cuts;
  for (size_t i = 0; i < 60; ++i) cuts.push_back(i * 1370492 / 60 + i * 7);
  for (size_t i = 0; i < 20; ++i) cuts.push_back(1370492 + i * (bytes.size() - 1370492) / 20 + 1);
  for (size_t cut : cuts) {
    ASSERT_LT(cut, bytes.size());
    test::write_bytes(dir / "cut.gguf", std::vector<char>(bytes.begin(), bytes.begin() + std::ptrdiff_t(cut)));
    try {
      load_model(dir / "cut.gguf");
      ADD_FAILURE() << "no error at cut " << cut;
    } catch (const Error& e) {
      const std::string_view m = e.what();
      EXPECT_TRUE(m.find("truncated") != m.npos || m.find("magic") != m.npos || m.find("empty") != m.npos)
          << "cut " << cut << ": " << m;
    }
  }
}

TEST(Gguf, HostileHeadersAreClearErrors) {
  TempDir dir;
  auto expect_bad = [&](std::vector<char> bytes, std::string_view word) {
    test::write_bytes(dir / "bad.gguf", bytes);
    expect_error([&] { read_gguf(dir / "bad.gguf"); }, word);
    // open_tensor_archive routes it to the same reader.
    expect_error([&] { open_tensor_archive(dir / "bad.gguf"); }, word);
  };
  const std::vector<char> good = make_gguf();
  auto patched = [&](size_t offset, uint64_t value, size_t width) {
    std::vector<char> b = good;
    std::memcpy(b.data() + offset, &value, width);
    return b;
  };
  {
    std::vector<char> b = good;
    b[0] = 'X';
    test::write_bytes(dir / "bad.gguf", b);
    expect_error([&] { read_gguf(dir / "bad.gguf"); }, "magic");
  }
  expect_bad(patched(4, 1, 4), "version 1");
  expect_bad(patched(4, 4, 4), "version 4");
  expect_bad(patched(8, uint64_t(1) << 60, 8), "tensors");          // tensor count
  expect_bad(patched(16, uint64_t(1) << 60, 8), "metadata entries");  // kv count
  expect_bad(patched(24, uint64_t(1) << 62, 8), "truncated");        // first key's length
  // The tokens array's count (after key, type and element type).
  const size_t tokens_count = 24 + 8 + 20 + 4 + 8 + 4 + 8 + 21 + 4 + 4;
  expect_bad(patched(tokens_count, uint64_t(1) << 40, 8), "elements");
  {
    GgufSpec spec;
    spec.tensor_type = 12;  // Q4_K
    expect_bad(make_gguf(spec), "Q4_K");
    spec.tensor_type = 2;  // Q4_0 is read, but "b" has 5 elements: not whole blocks of 32
    expect_bad(make_gguf(spec), "Q4_0 but its rows have 5 elements, not a multiple of the block size 32");
    spec.tensor_type = 77;
    expect_bad(make_gguf(spec), "unknown type 77");
  }
  {
    GgufSpec spec;
    spec.second_offset = 48;  // not a multiple of 32
    expect_bad(make_gguf(spec), "alignment");
    spec.second_offset = 32;  // inside "a"
    expect_bad(make_gguf(spec), "overlap");
    spec.second_offset = 1024;  // past the end
    expect_bad(make_gguf(spec), "outside");
    spec.second_offset = ~uint64_t(0) - 31;
    expect_bad(make_gguf(spec), "outside");
  }
  {
    GgufSpec spec;
    spec.second_name = "a";
    expect_bad(make_gguf(spec), "duplicate tensor 'a'");
  }
  {
    GgufSpec spec;
    spec.first_dim = uint64_t(1) << 62;
    expect_bad(make_gguf(spec), "absurd");
    spec.first_dim = uint64_t(1) << 40;
    expect_bad(make_gguf(spec), "more than the file");
  }
  {
    GgufSpec spec;
    spec.alignment = 24;
    expect_bad(make_gguf(spec), "power of two");
    spec.alignment = 0;
    expect_bad(make_gguf(spec), "power of two");
  }
  {
    GgufSpec spec;
    spec.a_dims = 5;
    expect_bad(make_gguf(spec), "5 dimensions");
  }
  {
    GgufSpec spec;
    spec.third_key = "general.architecture";
    expect_bad(make_gguf(spec), "duplicate metadata key 'general.architecture'");
    spec.third_key = "";
    expect_bad(make_gguf(spec), "empty");
  }
  {
    GgufSpec spec;
    spec.ints_type = 9;  // an array of arrays
    expect_bad(make_gguf(spec), "array of arrays");
    spec.ints_type = 13;
    expect_bad(make_gguf(spec), "unknown type 13");
  }
  EXPECT_EQ(dir.file_count(), 1u);  // nothing but the last bad file itself
}

// ---- layouts: the same weights from every layout give the same logits ----------------------


// Same weights, same arithmetic: the logits agree to float32 rounding. They
// are in fact bit-identical (measured 0); the bound leaves room for a kernel
// that sums in another order for another storage type (llama.cpp keeps some
// LoRA matrices in F32 where the .pth has bf16), which moves logits of
// std ~2 by ~1e-6, while any mapping mistake moves them by 1e-2 or more.
constexpr float kSameWeights = 1e-5f;

void expect_same_logits(const std::string& a_path, const std::string& b_path, size_t n_tokens = 24) {
  SCOPED_TRACE(a_path + " vs " + b_path);
  const auto a = load_model(a_path);
  const auto b = load_model(b_path);
  ASSERT_EQ(a->config().n_vocab, b->config().n_vocab);
  EXPECT_EQ(a->config().arch, b->config().arch);
  EXPECT_EQ(a->state_size(), b->state_size());
  const auto tokens = some_tokens(a->config().n_vocab, n_tokens, 7);
  for (int64_t chunk : {int64_t(1), int64_t(5), int64_t(n_tokens)}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    EXPECT_LE(test::max_abs_diff(chunked_logits(*a, tokens, chunk), chunked_logits(*b, tokens, chunk)), kSameWeights);
  }
}

TEST(Layouts, LlamaCppRwkv7GgufGivesThePthsLogitsAtEveryPosition) {
  expect_same_logits(test::shared_path(kSharedGguf), test::shared_path(kSharedPth), 40);
}

TEST(Layouts, LlamaCppRwkv6GgufWithRescaleGivesThePthsLogits) {
  expect_same_logits(test::fixture_path("formats/rand-v6-llamacpp.gguf"),
                     test::fixture_path("formats/rand-v6-llamacpp.pth"));
}

TEST(Layouts, HuggingFaceAndFlaSafetensorsGiveThePthsLogits) {
  expect_same_logits(test::fixture_path("formats/hf-rwkv4/model.safetensors"), test::fixture_path("formats/hf-rwkv4.pth"));
  expect_same_logits(test::fixture_path("formats/hf-rwkv5/model.safetensors"), test::fixture_path("formats/hf-rwkv5.pth"));
  expect_same_logits(test::fixture_path("formats/hf-rwkv6/model.safetensors"), test::fixture_path("formats/hf-rwkv6.pth"));
  expect_same_logits(test::fixture_path("formats/fla-rwkv7/model.safetensors"),
                     test::fixture_path("formats/fla-rwkv7.pth"));
  expect_same_logits(test::fixture_path("formats/fla-rwkv7-tied/model.safetensors"),
                     test::fixture_path("formats/fla-rwkv7-tied.pth"));
  expect_same_logits(test::fixture_path("formats/rand-v7-official.safetensors"),
                     test::fixture_path("formats/rand-v7-official.pth"));
}

// Stronger than equal logits: every official tensor comes back with its
// official shape and exactly its values (the mapped side may store them
// wider: llama.cpp keeps some tensors in F32).
void expect_official_tensors(const std::string& mapped_path, const std::string& pth_path,
                             const std::set<std::string>& not_in_mapped = {}) {
  SCOPED_TRACE(mapped_path);
  const auto mapped = to_official_layout(open_tensor_archive(mapped_path));
  const TensorArchive pth = read_pth(pth_path);
  size_t compared = 0;
  for (const TensorInfo& t : pth.tensors()) {
    if (not_in_mapped.count(t.name)) {
      EXPECT_FALSE(mapped->contains(t.name)) << t.name;
      continue;
    }
    const TensorInfo* m = mapped->find(t.name);
    ASSERT_NE(m, nullptr) << t.name;
    EXPECT_EQ(m->shape, t.shape) << t.name;
    std::vector<float> a(size_t(t.numel())), b(size_t(m->numel()));
    convert_to_f32(t.dtype, t.data, a.data(), a.size());
    convert_to_f32(m->dtype, m->data, b.data(), b.size());
    EXPECT_TRUE(a == b) << t.name << " differs";
    ++compared;
  }
  EXPECT_EQ(mapped->tensors().size(), compared) << "extra tensors in the mapped archive";
}

TEST(Layouts, EveryTensorComesBackWithItsOfficialNameShapeAndValue) {
  // llama.cpp's converter drops the file's layer-0 v0/v1/v2 (unused) and writes dummies, which we drop.
  expect_official_tensors(test::shared_path(kSharedGguf), test::shared_path(kSharedPth),
                          {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"});
  expect_official_tensors(test::fixture_path("formats/rand-v6-llamacpp.gguf"),
                          test::fixture_path("formats/rand-v6-llamacpp.pth"));
  expect_official_tensors(test::fixture_path("formats/hf-rwkv4/model.safetensors"),
                          test::fixture_path("formats/hf-rwkv4.pth"));
  expect_official_tensors(test::fixture_path("formats/hf-rwkv5/model.safetensors"),
                          test::fixture_path("formats/hf-rwkv5.pth"));
  expect_official_tensors(test::fixture_path("formats/hf-rwkv6/model.safetensors"),
                          test::fixture_path("formats/hf-rwkv6.pth"));
  expect_official_tensors(test::fixture_path("formats/fla-rwkv7/model.safetensors"),
                          test::fixture_path("formats/fla-rwkv7.pth"),
                          {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"});
  const auto gguf = to_official_layout(open_tensor_archive(test::shared_path(kSharedGguf)));
  EXPECT_EQ(gguf->format, "gguf");
  EXPECT_EQ(gguf->metadata.at("rwkv.layout_mapped_from"), "llama.cpp rwkv7");
  EXPECT_EQ(detect_layout(*gguf), Layout::Official);
  EXPECT_EQ(to_official_layout(gguf), gguf);  // mapping twice changes nothing
}

TEST(Layouts, RwkvCppFilesUndoneEqualThePythonInverse) {
  // tests/reference/fixtures_*.py undo rwkv.cpp's converter in numpy (float64);
  // the C++ inverse must agree: rearrangements exactly, the recomputed
  // decays/bonuses to float32 rounding.
  const std::pair<std::string, std::string> cases[] = {
      {test::tiny_model("4v0-660K", "FP32"), test::fixture_path("versions/tiny-4v0-fp32.pth")},
      {test::tiny_model("5v1-730K", "FP16"), test::fixture_path("versions/tiny-5v1-fp16.pth")},
      {test::tiny_model("5v2-730K", "FP32"), test::fixture_path("versions/tiny-5v2-fp32.pth")},
      {test::tiny_model("7v0-834K", "FP32"), test::fixture_path("rwkv7/tiny-7v0-fp32.pth")},
      {test::tiny_model("7v0-834K", "FP16"), test::fixture_path("rwkv7/tiny-7v0-fp16.pth")},
  };
  for (const auto& [bin, pth_path] : cases) {
    SCOPED_TRACE(bin);
    const auto mapped = to_official_layout(std::make_shared<TensorArchive>(read_rwkvcpp(bin)), true);
    EXPECT_EQ(mapped->format, "official");
    const TensorArchive pth = read_pth(pth_path);
    ASSERT_EQ(mapped->tensors().size(), pth.tensors().size());
    for (const TensorInfo& t : pth.tensors()) {
      const TensorInfo* m = mapped->find(t.name);
      ASSERT_NE(m, nullptr) << t.name;
      EXPECT_EQ(m->shape, t.shape) << t.name;
      std::vector<float> a(size_t(t.numel())), b(size_t(m->numel()));
      convert_to_f32(t.dtype, t.data, a.data(), a.size());
      convert_to_f32(m->dtype, m->data, b.data(), b.size());
      float worst = 0;
      for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(1.0f, std::fabs(a[i])));
      EXPECT_LE(worst, 1e-6f) << t.name;
    }
  }
  // Without the request, rwkv.cpp files are left to the loaders.
  const auto raw = std::make_shared<TensorArchive>(read_rwkvcpp(test::tiny_model("4v0-660K", "FP32")));
  EXPECT_EQ(to_official_layout(raw), raw);
}

// An archive holding `src`'s tensors but with some removed or one added.
std::shared_ptr<TensorArchive> edited(std::shared_ptr<const TensorArchive> src, const std::string& drop,
                                      const std::string& add = "") {
  auto a = std::make_shared<TensorArchive>();
  a->format = src->format;
  a->path = src->path;
  a->metadata = src->metadata;
  a->keep_alive(src);
  for (const TensorInfo& t : src->tensors())
    if (t.name != drop) a->add(t);
  if (!add.empty()) {
    TensorInfo t = src->tensors().front();
    t.name = add;
    a->add(t);
  }
  return a;
}

TEST(Layouts, MissingUnknownOrInconsistentTensorsAreClearErrors) {
  const auto gguf = open_tensor_archive(test::shared_path(kSharedGguf));
  expect_error([&] { load_model(edited(gguf, "blk.1.time_mix_w1.weight")); }, "missing tensor 'blk.1.time_mix_w1.weight'");
  expect_error([&] { load_model(edited(gguf, "", "blk.0.mystery.weight")); }, "unexpected tensors in a llama.cpp rwkv7 file: 'blk.0.mystery.weight'");
  {
    auto a = edited(gguf, "");
    a->metadata["rwkv7.wkv.head_size"] = "48";
    expect_error([&] { load_model(a); }, "head_size 48 does not divide");
    a->metadata.erase("rwkv7.wkv.head_size");
    expect_error([&] { load_model(a); }, "'rwkv7.wkv.head_size' is missing");
    a->metadata["general.architecture"] = "llama";
    expect_error([&] { load_model(a); }, "architecture 'llama' is not supported");
  }
  const auto v6 = open_tensor_archive(test::fixture_path("formats/rand-v6-llamacpp.gguf"));
  expect_error([&] { load_model(edited(v6, "blk.3.channel_mix_value.weight")); }, "missing tensor 'blk.3.channel_mix_value.weight'");
  const auto fla = open_tensor_archive(test::fixture_path("formats/fla-rwkv7/model.safetensors"));
  expect_error([&] { load_model(edited(fla, "model.layers.1.attn.w_lora.lora.2.bias")); }, "blocks.1.att.w0");
  expect_error([&] { load_model(edited(fla, "", "model.layers.0.attn.extra")); }, "'model.layers.0.attn.extra'");
  const auto hf = open_tensor_archive(test::fixture_path("formats/hf-rwkv4/model.safetensors"));
  expect_error([&] { load_model(edited(hf, "", "rwkv.something")); }, "'rwkv.something'");
  const auto hf6 = open_tensor_archive(test::fixture_path("formats/hf-rwkv6/model.safetensors"));
  expect_error([&] { load_model(edited(hf6, "rwkv.blocks.1.attention.time_maa_w2")); },
               "missing tensor 'blocks.1.att.time_maa_w2'");
  expect_error([&] { load_model(edited(hf6, "", "rwkv.blocks.0.attention.time_state")); },
               "'blocks.0.att.time_state'");
}

TEST(Layouts, ConfigJsonIsCheckedAgainstTheTensors) {
  TempDir dir;
  std::filesystem::create_directories(dir / "m");
  std::filesystem::copy_file(test::fixture_path("formats/fla-rwkv7-tied/model.safetensors"), dir / "m/model.safetensors");
  // Without config.json nothing says the head is tied: the missing lm_head is an error.
  expect_error([&] { load_model(dir / "m/model.safetensors"); }, "lm_head.weight");
  auto write_config = [&](const std::string& text) {
    test::write_bytes(dir / "m/config.json", std::vector<char>(text.begin(), text.end()));
  };
  write_config(R"({"architectures": ["RWKV7ForCausalLM"], "hidden_size": 64, "tie_word_embeddings": true})");
  EXPECT_EQ(load_model(dir / "m/model.safetensors")->config().n_embd, 64);
  write_config(R"({"architectures": ["RWKV7ForCausalLM"], "hidden_size": 96, "tie_word_embeddings": true})");
  expect_error([&] { load_model(dir / "m/model.safetensors"); }, "hidden_size is 96");
  write_config(R"({"architectures": ["LlamaForCausalLM"]})");
  expect_error([&] { load_model(dir / "m/model.safetensors"); }, "LlamaForCausalLM");
  // Hugging Face RWKV-5/6: the class must fit the tensors, and so must head_size.
  for (const char* v : {"5", "6"}) {
    const std::string d = dir / (std::string("hf") + v);
    std::filesystem::create_directories(d);
    std::filesystem::copy_file(test::fixture_path(std::string("formats/hf-rwkv") + v + "/model.safetensors"),
                               d + "/model.safetensors");
    const std::string cls = std::string("Rwkv") + v + "ForCausalLM";
    auto write = [&](const std::string& text) {
      test::write_bytes(d + "/config.json", std::vector<char>(text.begin(), text.end()));
    };
    write(R"({"architectures": [")" + cls + R"("], "hidden_size": 64, "head_size": 32})");
    EXPECT_EQ(load_model(d + "/model.safetensors")->config().head_size, 32);
    write(R"({"architectures": ["RwkvForCausalLM"]})");
    expect_error([&] { load_model(d + "/model.safetensors"); }, "expected [\"" + cls + "\"]");
    write(R"({"architectures": [")" + cls + R"("], "head_size": 64})");
    expect_error([&] { load_model(d + "/model.safetensors"); }, "head_size is 64, but the tensors say 32");
  }
  write_config(R"({"architectures": )");
  expect_error([&] { load_model(dir / "m/model.safetensors"); }, "config.json");
}

TEST(Layouts, WorldVocabularyFromGgufMetadataEqualsTheVocabFile) {
  const auto gguf = open_tensor_archive(test::shared_path(kSharedGguf));
  const std::string text = world_vocab_from_gguf(*gguf);
  ASSERT_FALSE(text.empty());
  const WorldTokenizer from_gguf = WorldTokenizer::parse(text, "gguf");
  const WorldTokenizer from_file = WorldTokenizer::load(test::shared_path("tokenizers/rwkv_vocab_v20230424.txt"));
  EXPECT_EQ(from_gguf.token_count(), from_file.token_count());
  ASSERT_EQ(from_gguf.vocab_size(), from_file.vocab_size());
  for (int32_t id = 1; id < from_file.vocab_size(); ++id)
    ASSERT_EQ(from_gguf.token_bytes(id), from_file.token_bytes(id)) << "token " << id;
  const std::string sample = "Hello, 世界! \n\t\\ 'quotes' \"dq\" \xff";
  EXPECT_EQ(from_gguf.encode(sample), from_file.encode(sample));
  // Other files have no World vocabulary.
  EXPECT_EQ(world_vocab_from_gguf(*open_tensor_archive(test::fixture_path("formats/rand-v6-llamacpp.gguf"))), "");
}

// ---- rwkv convert ---------------------------------------------------------------------

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// Largest |a - b| over all positions in sequence mode, normalised by the std of a.
float logit_error(const Model& a, const Model& b, std::vector<int32_t> tokens) {
  const auto la = chunked_logits(a, tokens, int64_t(tokens.size())), lb = chunked_logits(b, tokens, int64_t(tokens.size()));
  double mean = 0, sq = 0;
  for (float x : la) mean += x;
  mean /= double(la.size());
  for (float x : la) sq += (x - mean) * (x - mean);
  return test::max_abs_diff(la, lb) / float(std::sqrt(sq / double(la.size())));
}

struct ConvertCase {
  std::string source;
  // Largest logit error / logit std allowed. 0 where only bytes move (the
  // converted file holds the source's numbers exactly, so the engine computes
  // the same; kSameWeights-sized slack as above). rwkv.cpp's v4/v5 decays and
  // bonuses are recomputed (log(-w), log(-log(w)), log(u) in double, stored
  // as float32), one float32 rounding per value, which moves logits by up to
  // 2e-6 of their std (measured: 5v2 1.98e-6, rand 5.2 7e-7; all other cases 0);
  // 1e-5 still catches any wrong transform (>= 1e-2).
  float tolerance;
};

TEST(Convert, EveryReadableFileConvertsToPthAndSafetensorsWithTheSameLogits) {
  TempDir dir;
  const std::vector<ConvertCase> cases = {
      {test::shared_path(kSharedGguf), 1e-5f},
      {test::fixture_path("formats/rand-v6-llamacpp.gguf"), 1e-5f},
      {test::fixture_path("formats/hf-rwkv4/model.safetensors"), 1e-5f},
      {test::fixture_path("formats/fla-rwkv7/model.safetensors"), 1e-5f},
      {test::fixture_path("versions/rand-v4-L3-C96-V300-bf16.pth"), 1e-5f},
      {test::fixture_path("versions/rand-v5.0-L2-C64-hs16-V256-bf16.pth"), 1e-5f},
      {test::fixture_path("versions/rand-v5.1-L3-C128-hs32-V512-bf16.pth"), 1e-5f},
      {test::fixture_path("versions/rand-v5.2-L2-C128-hs64-V400-bf16.pth"), 1e-5f},
      {test::fixture_path("versions/rand-v6-L3-C128-hs32-V512-bf16.pth"), 1e-5f},
      {test::fixture_path("rwkv7/rand-v7-L4-C128-hs32-V512-bf16.pth"), 1e-5f},
      {test::fixture_path("rwkv7/rand-v7-L3-C128-hs64-V1000-bf16.pth"), 1e-5f},
      {test::tiny_model("4v0-660K", "FP32"), 1e-5f},
      {test::tiny_model("5v1-730K", "FP16"), 1e-5f},
      {test::tiny_model("5v2-730K", "FP32"), 1e-5f},
      {test::tiny_model("7v0-834K", "FP16"), 1e-5f},
      {test::fixture_path("versions/rand-v5.2-L2-C128-hs64-V400-bf16.bin"), 1e-5f},
      {test::fixture_path("versions/rand-v6-L3-C128-hs32-V512-bf16.bin"), 1e-5f},
  };
  for (const ConvertCase& c : cases) {
    SCOPED_TRACE(c.source);
    const auto source = load_model(c.source);
    const auto tokens = some_tokens(source->config().n_vocab, 16, 11);
    for (const char* out : {"out.pth", "out.safetensors"}) {
      SCOPED_TRACE(out);
      const test::CommandResult r = test::run_cli("convert -m " + quoted(c.source) + " -o " + quoted(dir / out));
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_NE(r.output.find("100%"), std::string::npos) << "no progress bar: " << r.output;
      const auto converted = load_model(dir / out);
      EXPECT_EQ(converted->config().arch, source->config().arch);
      EXPECT_EQ(converted->config().file_format, std::string(out).substr(4));
      EXPECT_EQ(detect_layout(*open_tensor_archive(dir / out)), Layout::Official);
      const float err = logit_error(*source, *converted, tokens);
      EXPECT_LE(err, c.tolerance);
      if (std::string(out) == "out.pth") std::printf("  %s: max logit error / std %.3g\n", c.source.c_str(), err);
    }
  }
  EXPECT_EQ(dir.file_count(), 2u);  // no temporary files left behind
}

TEST(Convert, DtypeChangesStayWithinTheirRounding) {
  TempDir dir;
  struct DtypeCase {
    std::string source, dtype;
    DType expected;
    // bf16 -> f32 is exact. bf16 -> f16 is exact except for values below
    // f16's normal range (6e-5), which these weights barely have (measured
    // 4.7e-6 and 2.2e-6 of the logits' std). f32 -> bf16
    // rounds every weight to 8 significant bits (relative 2^-9): logits of a
    // 12-layer model move by up to a few percent of their std (measured 0.022
    // for tiny 4v0; 0 for tiny 7v0, whose weights are bf16 values already).
    float tolerance;
  };
  const std::vector<DtypeCase> cases = {
      {test::fixture_path("rwkv7/rand-v7-L4-C128-hs32-V512-bf16.pth"), "f32", DType::F32, 1e-5f},
      {test::fixture_path("versions/rand-v6-L3-C128-hs32-V512-bf16.pth"), "f16", DType::F16, 1e-4f},
      {test::shared_path(kSharedGguf), "f16", DType::F16, 1e-4f},
      {test::tiny_model("4v0-660K", "FP32"), "bf16", DType::BF16, 0.05f},
      {test::tiny_model("7v0-834K", "FP32"), "bf16", DType::BF16, 0.05f},
  };
  for (const DtypeCase& c : cases) {
    SCOPED_TRACE(c.source + " -> " + c.dtype);
    const test::CommandResult r =
        test::run_cli("convert -m " + quoted(c.source) + " -o " + quoted(dir / "out.safetensors") + " --dtype " + c.dtype);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto archive = open_tensor_archive(dir / "out.safetensors");
    for (const TensorInfo& t : archive->tensors()) EXPECT_EQ(t.dtype, c.expected) << t.name;
    const auto source = load_model(c.source);
    const auto converted = load_model(dir / "out.safetensors");
    const float err = logit_error(*source, *converted, some_tokens(source->config().n_vocab, 16, 3));
    EXPECT_LE(err, c.tolerance);
    std::printf("  %s -> %s: max logit error / std %.3g\n", c.source.c_str(), c.dtype.c_str(), err);
  }
}

TEST(Convert, BadInputIsAClearErrorAndNoFileIsWritten) {
  TempDir dir;
  const std::string gguf = test::shared_path(kSharedGguf);
  auto expect_failure = [&](const std::string& args, std::string_view word) {
    const test::CommandResult r = test::run_cli("convert " + args);
    EXPECT_EQ(r.exit_code, 1) << args << ": " << r.output;
    EXPECT_NE(r.output.find(word), std::string::npos) << args << ": " << r.output;
  };
  expect_failure("-m " + quoted(dir / "missing.pth") + " -o " + quoted(dir / "out.pth"), "cannot open");
  expect_failure("-m " + quoted(gguf) + " -o " + quoted(dir / "out.pth") + " --dtype q8", "--dtype must be");
  expect_failure("-m " + quoted(gguf) + " -o " + quoted(dir / "out.npy") + " --format npy", "--format must be");
  expect_failure("-m " + quoted(gguf) + " -o " + quoted(dir / "no/such/dir/out.pth"), "no/such/dir");
  const auto bytes = test::read_bytes(gguf);
  for (size_t cut : {size_t(100), bytes.size() / 2, bytes.size() - 1}) {
    test::write_bytes(dir / "cut.gguf", std::vector<char>(bytes.begin(), bytes.begin() + std::ptrdiff_t(cut)));
    expect_failure("-m " + quoted(dir / "cut.gguf") + " -o " + quoted(dir / "out.pth"), "truncated");
  }
  // A quantized file needs --dtype: neither format holds ggml blocks.
  expect_failure("-m " + quoted(test::tiny_model("4v0-660K", "Q5_1")) + " -o " + quoted(dir / "out.pth"), "q5_1");
  // A failed conversion leaves an existing output as it was.
  test::write_bytes(dir / "out.pth", {'k', 'e', 'e', 'p'});
  expect_failure("-m " + quoted(dir / "cut.gguf") + " -o " + quoted(dir / "out.pth"), "truncated");
  EXPECT_EQ(test::read_bytes(dir / "out.pth"), (std::vector<char>{'k', 'e', 'e', 'p'}));
  EXPECT_EQ(dir.file_count(), 2u);  // cut.gguf and out.pth: nothing else
}

TEST(Convert, QuantizedRwkvCppFilesConvertWithADtype) {
  TempDir dir;
  const std::string q = test::tiny_model("4v0-660K", "Q5_1");
  const test::CommandResult r = test::run_cli("convert -m " + quoted(q) + " -o " + quoted(dir / "out.pth") + " --dtype f32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto source = load_model(q);
  const auto converted = load_model(dir / "out.pth");
  // The dequantized f32 weights are exact; only a quantized kernel that also
  // rounds activations could differ (measured 0: the engine's does not).
  const float err = logit_error(*source, *converted, some_tokens(256, 16, 5));
  EXPECT_LE(err, 0.05f);
  std::printf("  Q5_1 -> f32: max logit error / std %.3g\n", err);
}

TEST(Convert, InfoNamesEachFormat) {
  const std::pair<std::string, std::string> cases[] = {
      {test::shared_path(kSharedGguf), "format: gguf"},
      {test::fixture_path("formats/rand-v7-official.safetensors"), "format: safetensors"},
      {test::fixture_path("formats/hf-rwkv4/model.safetensors"), "format: safetensors"},
      {test::shared_path(kSharedPth), "format: pth"},
  };
  for (const auto& [path, line] : cases) {
    const test::CommandResult r = test::run_cli("info -m " + quoted(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(line + "\n"), std::string::npos) << path << ": " << r.output;
  }
}


TEST(MappedFile, ReleasedPagesReadBackUnchangedAndOnlyItsOwnRangesAreReleased) {
  test::TempDir dir;
  const std::string path = dir / "pages.bin";
  std::vector<uint8_t> bytes(3 * 4096 + 123);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 7 + 3);
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    std::fclose(f);
  }
  const auto file = MappedFile::open(path);
  const std::byte* d = file->data();
  ASSERT_EQ(std::memcmp(d, bytes.data(), bytes.size()), 0);  // touch every page
  EXPECT_TRUE(file->release(d + 100, 2 * 4096 + 500));
  EXPECT_TRUE(file->release(d, bytes.size()));
  EXPECT_EQ(std::memcmp(d, bytes.data(), bytes.size()), 0);  // mapped again from the file
  EXPECT_FALSE(file->release(bytes.data(), 10));              // not in the mapping
  EXPECT_FALSE(file->release(d + 10, bytes.size()));          // runs past its end
}

}  // namespace
}  // namespace rwkv
