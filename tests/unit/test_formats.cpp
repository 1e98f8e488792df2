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
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/gguf.h"
#include "formats/open.h"
#include "formats/pth.h"
#include "formats/pth_writer.h"
#include "formats/safetensors.h"
#include "test_util.h"

#include <zlib.h>

namespace rwkv {
namespace {

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
  std::vector<char> b(8);
  const uint64_t n = claimed == ~uint64_t(0) ? header.size() : claimed;
  std::memcpy(b.data(), &n, 8);
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 1);
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
    spec.tensor_type = 2;
    expect_bad(make_gguf(spec), "Q4_0");
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

}  // namespace
}  // namespace rwkv
