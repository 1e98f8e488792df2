// The `rwkv` command line: its contracts (info fields, logits .npy shapes,
// state files) and its handling of bad input: a clear error, a non-zero exit,
// never a crash, and no output file left behind.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "formats/npy.h"
#include "runtime/state_file.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::run_cli;
using test::TempDir;

const std::string kTinyFp32 = test::tiny_model("7v0-834K", "FP32");

// Expects a failed run whose message contains `needle`, that did not crash,
// and that left no file at `output` (nor temporary files in its folder).
void expect_clean_failure(const test::CommandResult& r, const std::string& needle, const std::string& output,
                          const TempDir& dir, size_t files_before) {
  EXPECT_EQ(r.exit_code, 1) << r.output;  // 1 = reported error; a crash would be >= 128
  EXPECT_NE(r.output.find("error:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.output;
  EXPECT_FALSE(std::filesystem::exists(output)) << output;
  EXPECT_EQ(dir.file_count(), files_before);
}

// Offsets of each tensor record in an rwkv.cpp file (for corrupting copies).
struct Record {
  size_t start, dims_at, type_at, data_at, end;
  std::string name;
};
std::vector<Record> records(const std::vector<char>& f) {
  std::vector<Record> out;
  size_t p = 24;
  while (p < f.size()) {
    Record r;
    r.start = p;
    int32_t nd, kl, type;
    std::memcpy(&nd, &f[p], 4);
    std::memcpy(&kl, &f[p + 4], 4);
    std::memcpy(&type, &f[p + 8], 4);
    r.type_at = p + 8;
    r.dims_at = p + 12;
    size_t numel = 1;
    for (int i = 0; i < nd; ++i) {
      int32_t d;
      std::memcpy(&d, &f[p + 12 + 4 * size_t(i)], 4);
      numel *= size_t(d);
    }
    r.name.assign(&f[p + 12 + 4 * size_t(nd)], size_t(kl));
    r.data_at = p + 12 + 4 * size_t(nd) + size_t(kl);
    r.end = r.data_at + numel * (type == 0 ? 4 : 2);
    out.push_back(r);
    p = r.end;
  }
  return out;
}
const Record& find_record(const std::vector<Record>& rs, const std::string& name) {
  for (const auto& r : rs)
    if (r.name == name) return r;
  throw std::runtime_error("no record " + name);
}

TEST(Cli, InfoPrintsTheModelFacts) {
  const auto r = run_cli("info -m " + kTinyFp32);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"version: 7\n", "format: rwkv.cpp\n", "dtype: f32\n", "n_layer: 12\n", "n_embd: 64\n",
                           "head_size: 64\n", "n_vocab: 256\n", "parameters: 829888\n"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << " missing in " << r.output;
}

TEST(Cli, LogitsWritesLastAndAllPositions) {
  TempDir dir;
  auto r = run_cli("logits -m " + kTinyFp32 + " --tokens 34,105,110 -o " + (dir / "last.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto last = read_npy_f32(dir / "last.npy");
  EXPECT_EQ(last.shape, std::vector<int64_t>{256});
  const auto expected = test::read_f32_file(test::shared_path("models/rwkvcpp-tiny/expected-logits-7v0-834K.bin"));
  EXPECT_LE(test::max_abs_diff(last.data, expected), 5e-5f);

  r = run_cli("logits -m " + kTinyFp32 + " --text '\"in' --all-positions --chunk 1 -o " + (dir / "all.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto all = read_npy_f32(dir / "all.npy");
  EXPECT_EQ(all.shape, (std::vector<int64_t>{3, 256}));
  EXPECT_LE(test::max_abs_diff(std::span<const float>(all.data).subspan(512), expected), 5e-5f);
}

TEST(Cli, StateOutThenStateInContinuesTheSequence) {
  TempDir dir;
  ASSERT_EQ(run_cli("logits -m " + kTinyFp32 + " --tokens 34,105 --state-out " + (dir / "s.state") + " -o " +
                    (dir / "a.npy"))
                .exit_code,
            0);
  ASSERT_EQ(run_cli("logits -m " + kTinyFp32 + " --tokens 110 --state-in " + (dir / "s.state") + " -o " +
                    (dir / "b.npy"))
                .exit_code,
            0);
  const auto expected = test::read_f32_file(test::shared_path("models/rwkvcpp-tiny/expected-logits-7v0-834K.bin"));
  EXPECT_LE(test::max_abs_diff(read_npy_f32(dir / "b.npy").data, expected), 5e-5f);
}

TEST(CliErrors, BadArgumentsAreRefused) {
  TempDir dir;
  const std::string out = dir / "out.npy";
  struct Case {
    std::string args, needle;
  } cases[] = {
      {"logits -m " + kTinyFp32 + " --tokens 1,x,3 -o " + out, "not a token id"},
      {"logits -m " + kTinyFp32 + " --tokens 1,,3 -o " + out, "not a token id"},
      {"logits -m " + kTinyFp32 + " --tokens 34,256 -o " + out, "token id 256"},
      {"logits -m " + kTinyFp32 + " --tokens -5 -o " + out, "out of range"},
      {"logits -m " + kTinyFp32 + " --tokens 99999999999 -o " + out, "out of range"},
      {"logits -m " + kTinyFp32 + " --text '' -o " + out, "no tokens"},
      {"logits -m " + kTinyFp32 + " -o " + out, "--tokens or --text"},
      {"logits -m " + (dir / "missing.bin") + " --tokens 1 -o " + out, "cannot open"},
      {"logits -m " + kTinyFp32 + " --tokens 1 --state-in " + (dir / "missing.state") + " -o " + out, "cannot open"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    expect_clean_failure(run_cli(c.args), c.needle, out, dir, 0);
  }
  // Argument-parser errors: non-zero exit with a message, no output.
  for (const std::string& args : std::vector<std::string>{"logits -m " + kTinyFp32 + " --tokens 1 --chunk 0 -o " + out,
                                 "logits -m " + kTinyFp32 + " --tokens 1 --bogus -o " + out, "frobnicate",
                                 "logits --tokens 1 -o " + out}) {
    const auto r = run_cli(args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_LT(r.exit_code, 128) << args;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

TEST(CliErrors, DamagedRwkvCppFilesAreRefused) {
  TempDir dir;
  const std::string out = dir / "out.npy";
  const auto good = test::read_bytes(kTinyFp32);
  const auto rs = records(good);
  auto check = [&](const std::string& name, const std::vector<char>& bytes, const std::string& needle) {
    SCOPED_TRACE(name);
    test::write_bytes(dir / name, bytes);
    expect_clean_failure(run_cli("logits -m " + (dir / name) + " --tokens 1 -o " + out), needle, out, dir, 1);
    std::filesystem::remove(dir / name);
  };
  for (size_t cut : {size_t(3), size_t(20), size_t(30), rs[5].data_at + 10, good.size() - 1}) {
    check("cut" + std::to_string(cut) + ".bin", std::vector<char>(good.begin(), good.begin() + long(cut)),
          cut < 4 ? "unrecognised" : "truncated");
  }
  auto bytes = good;
  bytes[0] = 'X';
  check("magic.bin", bytes, "unrecognised model file format");
  bytes = good;
  bytes[4] = 7;  // version 7
  check("version.bin", bytes, "unsupported rwkv.cpp file version");

  bytes = good;  // unknown tensor data type
  const Record& rec = find_record(rs, "blocks.3.att.key.weight");
  const int32_t bogus_type = 42;
  std::memcpy(&bytes[rec.type_at], &bogus_type, 4);
  check("dtype.bin", bytes, "unknown data type 42");

  bytes = good;  // a shape that does not fit: key.weight as [32, 128] instead of [64, 64]
  const int32_t cols = 128, rows = 32;
  std::memcpy(&bytes[rec.dims_at], &cols, 4);
  std::memcpy(&bytes[rec.dims_at + 4], &rows, 4);
  check("shape.bin", bytes, "blocks.3.att.key.weight");

  bytes = good;  // absurd dimension
  const int32_t huge = 0x7fffffff;
  std::memcpy(&bytes[rec.dims_at], &huge, 4);
  std::memcpy(&bytes[rec.dims_at + 4], &huge, 4);
  check("huge.bin", bytes, "more elements than the file holds");

  // A missing tensor: drop one record.
  const Record& drop = find_record(rs, "blocks.7.ffn.value.weight");
  bytes.assign(good.begin(), good.begin() + long(drop.start));
  bytes.insert(bytes.end(), good.begin() + long(drop.end), good.end());
  check("missing.bin", bytes, "missing tensor 'blocks.7.ffn.value.weight'");

  // A duplicate tensor: repeat one record.
  bytes = good;
  bytes.insert(bytes.end(), good.begin() + long(drop.start), good.begin() + long(drop.end));
  check("duplicate.bin", bytes, "duplicate tensor");

  // An unexpected extra tensor: a renamed copy of one.
  bytes = good;
  bytes.insert(bytes.end(), good.begin() + long(drop.start), good.begin() + long(drop.end));
  std::memcpy(&bytes[good.size() + (drop.data_at - drop.start) - 12], "extra", 5);
  check("unknown.bin", bytes, "unexpected tensors 'blocks.7.ffn.extra.weight'");
}

TEST(CliErrors, HostileOrBrokenPthFilesAreRefused) {
  // Hand-made by tests/reference/fixtures_pth.py: pickles that try to run code
  // or use opcodes torch.save never writes, and broken containers.
  TempDir dir;
  const std::string out = dir / "out.npy";
  struct Case {
    std::string file, needle;
  } cases[] = {
      {"global_os_system.pth", "os.system"},
      {"global_eval.pth", "builtins.eval"},
      {"opcode_build.pth", "BUILD"},
      {"opcode_newobj.pth", "NEWOBJ"},
      {"unknown_opcode.pth", "unknown opcode"},
      {"missing_storage.pth", "storage"},
      {"shape_exceeds.pth", "storage"},
      {"int64.pth", "unsupported storage type"},
      {"cd_offset_absurd.pth", "pth"},
      {"legacy.pth", "legacy"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    expect_clean_failure(run_cli("logits -m " + test::fixture_path("pth/" + c.file) + " --tokens 1 -o " + out),
                         c.needle, out, dir, 0);
  }
  // A valid torch.save file whose tensors are not a whole RWKV model.
  expect_clean_failure(run_cli("logits -m " + test::fixture_path("pth/f32.pth") + " --tokens 1 -o " + out),
                       "missing 'blocks.0.ln1.weight'", out, dir, 0);
}

TEST(Cli, QuantizedRwkvCppFilesLoadButObsoleteOnesAreRefused) {
  TempDir dir;
  const std::string q51 = test::tiny_model("7v0-834K", "Q5_1");
  const auto ok = run_cli("logits -m " + q51 + " --tokens 1 -o " + (dir / "o.npy"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "o.npy"));
  std::filesystem::remove(dir / "o.npy");

  auto bytes = test::read_bytes(q51);
  bytes[4] = 100;  // version 100: quantized before ggml changed its block layouts
  test::write_bytes(dir / "v100.bin", bytes);
  expect_clean_failure(run_cli("logits -m " + (dir / "v100.bin") + " --tokens 1 -o " + (dir / "o.npy")), "obsolete",
                       dir / "o.npy", dir, 1);
  std::filesystem::remove(dir / "v100.bin");

  bytes = test::read_bytes(kTinyFp32);  // a tensor in Q4_2, a type rwkv.cpp removed
  const Record rec = find_record(records(bytes), "blocks.0.att.key.weight");  // a copy: records() is a temporary
  const int32_t q4_2 = 5;
  std::memcpy(&bytes[rec.type_at], &q4_2, 4);
  test::write_bytes(dir / "q4_2.bin", bytes);
  expect_clean_failure(run_cli("logits -m " + (dir / "q4_2.bin") + " --tokens 1 -o " + (dir / "o.npy")),
                       "Q4_2 format, which rwkv.cpp removed", dir / "o.npy", dir, 1);
}

TEST(CliErrors, DamagedOrForeignStateFilesAreRefused) {
  TempDir dir;
  const std::string out = dir / "out.npy";
  ASSERT_EQ(run_cli("logits -m " + kTinyFp32 + " --tokens 1 --state-out " + (dir / "good.state") + " -o " +
                    (dir / "first.npy"))
                .exit_code,
            0);
  std::filesystem::remove(dir / "first.npy");
  const auto good = test::read_bytes(dir / "good.state");
  auto check = [&](const std::string& name, const std::vector<char>& bytes, const std::string& needle) {
    SCOPED_TRACE(name);
    test::write_bytes(dir / name, bytes);
    expect_clean_failure(run_cli("logits -m " + kTinyFp32 + " --tokens 1 --state-in " + (dir / name) + " -o " + out),
                         needle, out, dir, 2);
    std::filesystem::remove(dir / name);
  };
  check("short.state", std::vector<char>(good.begin(), good.begin() + 100), "corrupted");
  check("tiny.state", std::vector<char>(good.begin(), good.begin() + 5), "not an RWKV state file");
  auto bytes = good;
  bytes[200] ^= 1;
  check("flipped.state", bytes, "corrupted");
  bytes = good;
  bytes[0] = 'X';
  check("magic.state", bytes, "wrong magic");

  // A well-formed state for another model shape.
  StateShape other{Arch::V7, 6, 64, 1, 64, 256};
  save_state_file(dir / "other.state", StateFile{State(other, 6 * (64 * 64 + 128)), {}});
  expect_clean_failure(run_cli("logits -m " + kTinyFp32 + " --tokens 1 --state-in " + (dir / "other.state") + " -o " + out),
                       "saved for another model", out, dir, 2);
}

TEST(CliErrors, FailureKeepsAnExistingOutputIntact) {
  TempDir dir;
  test::write_bytes(dir / "out.npy", {'o', 'l', 'd'});
  const auto r = run_cli("logits -m " + kTinyFp32 + " --tokens 300 -o " + (dir / "out.npy"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(test::read_bytes(dir / "out.npy"), (std::vector<char>{'o', 'l', 'd'}));
  EXPECT_EQ(dir.file_count(), 1u);
}

}  // namespace
}  // namespace rwkv
