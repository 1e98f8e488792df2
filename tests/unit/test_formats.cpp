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
#include "formats/open.h"
#include "formats/pth.h"
#include "formats/pth_writer.h"
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
std::string torch_listing(const TempDir& dir, const std::vector<std::string>& paths) {
  const std::string script =
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
      "        print(k, str(v.dtype).replace('torch.', ''), list(v.shape), b)\n";
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

}  // namespace
}  // namespace rwkv
