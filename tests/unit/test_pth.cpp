// Tests of the torch.save reader: ZIP container, safe unpickler, tensor
// assembly. Fixtures come from tests/reference/fixtures_pth.py (real torch.save
// output plus hand-built hostile files).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/pickle.h"
#include "formats/pth.h"
#include "formats/zip.h"

namespace rwkv {
namespace {

std::string fixture(const std::string& name) { return std::string(RWKV_FIXTURE_DIR) + "/pth/" + name; }

std::vector<std::byte> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture " << path << " (run tests/reference/fixtures_pth.py)";
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

void write_bytes(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// Many small files are written and mapped; tmpfs keeps that fast where it exists.
std::string temp_path(const std::string& name) {
  std::error_code ec;
  const std::string dir = std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm/" : testing::TempDir();
  return dir + "rwkv_test_pth_" + std::to_string(::getpid()) + "_" + name;
}

// Expects `fn` to throw rwkv::Error whose message contains every word given.
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string_view> words) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << *words.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (std::string_view w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-rwkv exception: " << e.what();
  }
}

std::vector<float> values_of(const TensorInfo& t) {
  std::vector<float> out(size_t(t.numel()));
  if (!out.empty()) convert_to_f32(t.dtype, t.data, out.data(), out.size());  // memcpy wants non-null
  return out;
}

// ---------------------------------------------------------------------------
// Good files: every tensor matches what torch wrote (manifest + .f32 values).

struct Expected {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

std::vector<Expected> load_expected(const std::string& stem) {
  std::vector<Expected> out;
  std::ifstream in(fixture(stem + ".manifest"));
  EXPECT_TRUE(in.good()) << "missing manifest for " << stem;
  std::string line;
  while (std::getline(in, line)) {
    Expected e;
    std::istringstream fields(line);
    std::string dims;
    std::getline(fields, e.name, '\t');
    std::getline(fields, e.dtype, '\t');
    std::getline(fields, dims);
    std::istringstream ds(dims);
    for (std::string d; std::getline(ds, d, ',');) e.shape.push_back(std::stoll(d));
    const auto raw = read_bytes(fixture(stem + "." + std::to_string(out.size()) + ".f32"));
    e.values.resize(raw.size() / 4);
    if (!e.values.empty()) std::memcpy(e.values.data(), raw.data(), e.values.size() * 4);
    out.push_back(std::move(e));
  }
  return out;
}

class PthMatchesTorch : public testing::TestWithParam<const char*> {};

TEST_P(PthMatchesTorch, TensorsInOrderWithTorchValues) {
  const std::string stem = GetParam();
  const auto expected = load_expected(stem);
  ASSERT_FALSE(expected.empty());
  const TensorArchive archive = read_pth(fixture(stem + ".pth"));
  EXPECT_EQ(archive.format, "pth");
  EXPECT_EQ(archive.path, fixture(stem + ".pth"));
  ASSERT_EQ(archive.tensors().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const TensorInfo& t = archive.tensors()[i];
    const Expected& e = expected[i];
    SCOPED_TRACE(stem + ": " + e.name);
    EXPECT_EQ(t.name, e.name);
    EXPECT_EQ(dtype_name(t.dtype), e.dtype);
    EXPECT_EQ(t.shape, e.shape);
    EXPECT_EQ(t.nbytes, size_t(t.numel()) * dtype_size(t.dtype));
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u);
    ASSERT_EQ(size_t(t.numel()), e.values.size());
    const auto got = values_of(t);
    for (size_t j = 0; j < got.size(); ++j)
      ASSERT_EQ(std::memcmp(&got[j], &e.values[j], 4), 0) << "element " << j << ": " << got[j] << " vs " << e.values[j];
    EXPECT_EQ(archive.find(e.name), &t);
  }
}

INSTANTIATE_TEST_SUITE_P(Pth, PthMatchesTorch,
                         testing::Values("f32", "f16", "bf16", "mixed", "noncontig", "shared", "newzip", "proto4",
                                         "module", "param", "deflate", "unaligned", "zip64"));

TEST(PthReader, KnownPatterns) {
  const TensorArchive a = read_pth(fixture("f32.pth"));
  const TensorInfo* cube = a.find("cube");
  ASSERT_NE(cube, nullptr);
  EXPECT_EQ(cube->shape, (std::vector<int64_t>{2, 3, 4}));
  const auto v = values_of(*cube);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], float(i));
  const TensorInfo* scalar = a.find("scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(values_of(*scalar), std::vector<float>{3.25f});

  // Hand-built control files (the bad files differ from these in one way).
  const TensorArchive ok = read_pth(fixture("crafted_ok.pth"));
  ASSERT_EQ(ok.tensors().size(), 1u);
  EXPECT_EQ(ok.tensors()[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(values_of(ok.tensors()[0]), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  const TensorArchive meta = read_pth(fixture("crafted_meta_ok.pth"));
  EXPECT_EQ(values_of(meta.tensors()[0]), (std::vector<float>{1, 2, 3, 4, 5}));
}

TEST(PthReader, NonContiguousViewsAreMaterialisedRowMajor) {
  const TensorArchive a = read_pth(fixture("noncontig.pth"));
  const TensorInfo* t = a.find("transposed");  // arange(12).reshape(3, 4).t()
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{4, 3}));
  const auto v = values_of(*t);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(v[size_t(i * 3 + j)], float(j * 4 + i));
  const TensorInfo* b = a.find("broadcast");  // stride 0
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(values_of(*b), (std::vector<float>{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2}));
}

TEST(PthReader, SharedStorageIsZeroCopy) {
  const TensorArchive a = read_pth(fixture("shared.pth"));
  const TensorInfo* whole = a.find("whole");
  ASSERT_NE(whole, nullptr);
  // Views of one STORED, aligned storage point into the same mapping.
  EXPECT_EQ(a.find("head")->data, whole->data + 2 * 4);
  EXPECT_EQ(a.find("tail")->data, whole->data + 10 * 4);
  EXPECT_EQ(a.find("row")->data, whole->data + 5 * 4);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(whole->data) % 64, 0u);  // torch aligns entries to 64 bytes
}

TEST(PthReader, EmptyTensorHasValidPointer) {
  const TensorArchive a = read_pth(fixture("mixed.pth"));
  const TensorInfo* e = a.find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(e->nbytes, 0u);
  EXPECT_NE(e->data, nullptr);
}

TEST(PthReader, CompressedAndRepackedFilesEqualTheOriginal) {
  const TensorArchive ref = read_pth(fixture("f32.pth"));
  for (const char* name : {"deflate.pth", "unaligned.pth", "zip64.pth"}) {
    SCOPED_TRACE(name);
    const TensorArchive a = read_pth(fixture(name));
    ASSERT_EQ(a.tensors().size(), ref.tensors().size());
    for (size_t i = 0; i < ref.tensors().size(); ++i) {
      const TensorInfo& x = a.tensors()[i];
      const TensorInfo& y = ref.tensors()[i];
      EXPECT_EQ(x.name, y.name);
      ASSERT_EQ(x.nbytes, y.nbytes);
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0);
    }
  }
}

TEST(PthReader, IsZipSniffsMagic) {
  EXPECT_TRUE(is_zip(bytes_of("PK\x03\x04rest")));
  EXPECT_TRUE(is_zip(bytes_of(std::string_view("PK\x05\x06", 4))));
  EXPECT_FALSE(is_zip(bytes_of("PK\x03")));
  EXPECT_FALSE(is_zip(bytes_of("\x80\x02\x8a\x0a")));
  EXPECT_FALSE(is_zip({}));
  EXPECT_TRUE(is_zip(read_bytes(fixture("f32.pth"))));
  EXPECT_FALSE(is_zip(read_bytes(fixture("legacy.pth"))));
}

// ---------------------------------------------------------------------------
// Bad files: each is refused with an rwkv::Error naming the file and the cause.

struct BadFile {
  const char* file;
  const char* word;
};

void PrintTo(const BadFile& b, std::ostream* os) { *os << b.file; }

class PthRejects : public testing::TestWithParam<BadFile> {};

TEST_P(PthRejects, WithClearError) {
  const std::string path = fixture(GetParam().file);
  expect_error([&] { read_pth(path); }, {GetParam().word, path});
}

INSTANTIATE_TEST_SUITE_P(
    Pth, PthRejects,
    testing::Values(
        BadFile{"does_not_exist.pth", "cannot open"}, BadFile{"wrong_magic.pth", "magic"},
        BadFile{"legacy.pth", "legacy"}, BadFile{"global_os_system.pth", "forbidden global 'os.system'"},
        BadFile{"global_eval.pth", "forbidden global 'builtins.eval'"},
        BadFile{"global_stack.pth", "forbidden global 'posix.system'"}, BadFile{"opcode_inst.pth", "INST"},
        BadFile{"opcode_build.pth", "BUILD"}, BadFile{"opcode_newobj.pth", "NEWOBJ"},
        BadFile{"reduce_storage.pth", "forbidden call of 'torch.FloatStorage'"}, BadFile{"memo_oob.pth", "memo index 7"},
        BadFile{"underflow.pth", "underflow"}, BadFile{"no_stop.pth", "no STOP"},
        BadFile{"long_string.pth", "truncated"}, BadFile{"unknown_opcode.pth", "unknown opcode 0xff"},
        BadFile{"missing_key.pth", "missing storage"}, BadFile{"missing_storage.pth", "missing storage"},
        BadFile{"shape_exceeds.pth", "exceeds its storage"}, BadFile{"offset_exceeds.pth", "exceeds its storage"},
        BadFile{"stride_exceeds.pth", "exceeds its storage"}, BadFile{"numel_lies.pth", "claims 7 elements"},
        BadFile{"negative_dim.pth", "negative"}, BadFile{"numel_overflow.pth", "too large"},
        BadFile{"int64.pth", "tensor 'ids' has unsupported storage type torch.LongStorage"},
        BadFile{"int_storage.pth", "torch.IntStorage"}, BadFile{"meta_neg.pth", "'neg'"},
        BadFile{"list_top.pth", "list, not a dict"}, BadFile{"nested.pth", "'outer' is a dict, not a tensor"},
        BadFile{"cd_size_absurd.pth", "central directory"}, BadFile{"cd_offset_absurd.pth", "central directory"},
        BadFile{"count_absurd.pth", "65534 entries"}, BadFile{"count_zip64_no_locator.pth", "ZIP64"},
        BadFile{"entry_size_absurd.pth", "extends past"}, BadFile{"local_offset_absurd.pth", "local header"},
        BadFile{"encrypted.pth", "encrypted"}, BadFile{"method_bzip2.pth", "compression method 12"},
        BadFile{"name_len_absurd.pth", "overruns"}, BadFile{"zip64_size_absurd.pth", "extends past"},
        BadFile{"deflate_longer.pth", "more than its declared"}, BadFile{"deflate_shorter.pth", "but declares"},
        BadFile{"deflate_bad_crc.pth", "CRC"}, BadFile{"deflate_bomb_claim.pth", "impossible"},
        BadFile{"deflate_corrupt.pth", "DEFLATE"}, BadFile{"stored_bad_crc.pth", "CRC"}),
    [](const testing::TestParamInfo<BadFile>& info) {
      std::string n = info.param.file;
      n = n.substr(0, n.find('.'));
      return n;
    });

// Every strict prefix of a real file is refused cleanly (never a crash).
TEST(PthTruncated, EveryCutPointIsAnError) {
  for (const char* name : {"f32.pth", "zip64.pth"}) {
    const auto full = read_bytes(fixture(name));
    ASSERT_GT(full.size(), 100u);
    const std::string path = temp_path("cut.pth");
    for (size_t n = 0; n < full.size(); ++n) {
      write_bytes(path, std::span(full).first(n));
      SCOPED_TRACE(std::string(name) + " cut at " + std::to_string(n));
      expect_error([&] { read_pth(path); }, {path});
    }
    std::filesystem::remove(path);
  }
}

// Single corrupted bytes anywhere must load or fail with rwkv::Error: no crash,
// no other exception (run under ASan/UBSan to check memory safety too).
TEST(PthCorrupted, SingleByteFlipsNeverCrash) {
  for (const char* name : {"f32.pth", "deflate.pth", "zip64.pth"}) {
    const auto full = read_bytes(fixture(name));
    const std::string path = temp_path("flip.pth");
    size_t errors = 0;
    for (size_t i = 0; i < full.size(); ++i) {
      for (uint8_t mask : {0x01, 0x80, 0xff}) {
        auto bad = full;
        bad[i] ^= std::byte{mask};
        write_bytes(path, bad);
        try {
          const TensorArchive a = read_pth(path);
          for (const TensorInfo& t : a.tensors()) values_of(t);  // touch the data
        } catch (const Error&) {
          ++errors;
        } catch (const std::exception& e) {
          ADD_FAILURE() << name << " byte " << i << " ^ " << int(mask) << ": non-rwkv exception " << e.what();
        }
      }
    }
    EXPECT_GT(errors, full.size() / 4) << name;  // most headers and pickle bytes matter
    std::filesystem::remove(path);
  }
}

// ---------------------------------------------------------------------------
// ZipReader on its own.

TEST(ZipReader, ListsTorchEntries) {
  const auto bytes = read_bytes(fixture("f32.pth"));
  ZipReader zip(bytes, "f32.pth");
  ASSERT_NE(zip.find("f32/data.pkl"), nullptr);
  ASSERT_NE(zip.find("f32/version"), nullptr);
  EXPECT_EQ(zip.find("f32/nope"), nullptr);
  EXPECT_EQ(zip.entries().size(), 6u);  // data.pkl, 4 storages, version
  for (const ZipEntry& e : zip.entries()) {
    EXPECT_EQ(e.method, ZipReader::kStored) << e.name;
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
    EXPECT_EQ(e.name.rfind("f32/", 0), 0u) << e.name;
  }
  const auto pkl = zip.read(*zip.find("f32/data.pkl"));
  ASSERT_GE(pkl.size(), 3u);
  EXPECT_EQ(pkl[0], std::byte{0x80});
  EXPECT_EQ(pkl[1], std::byte{2});
  EXPECT_EQ(pkl.back(), std::byte{'.'});
  EXPECT_EQ(pkl.data(), bytes.data() + zip.find("f32/data.pkl")->data_offset);  // a view, no copy
  zip.verify_crc(*zip.find("f32/data.pkl"));
  const auto version = zip.read(*zip.find("f32/version"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(version.data()), version.size()), "3\n");
}

TEST(ZipReader, DeflateAndZip64MatchStored) {
  const auto plain_bytes = read_bytes(fixture("f32.pth"));
  ZipReader plain(plain_bytes, "f32.pth");
  for (const char* name : {"deflate.pth", "zip64.pth"}) {
    SCOPED_TRACE(name);
    const auto bytes = read_bytes(fixture(name));
    ZipReader zip(bytes, name);
    ASSERT_EQ(zip.entries().size(), plain.entries().size());
    for (const ZipEntry& e : plain.entries()) {
      const ZipEntry* other = zip.find(e.name);
      ASSERT_NE(other, nullptr) << e.name;
      EXPECT_EQ(other->uncompressed_size, e.uncompressed_size);
      EXPECT_EQ(other->crc32, e.crc32);
      const auto a = plain.read(e);
      const auto b = zip.read(*other);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << e.name;
      EXPECT_EQ(zip.read(*other).data(), b.data()) << "inflated twice";
      zip.verify_crc(*other);
    }
  }
}

TEST(ZipReader, RejectsTinyAndForgedInput) {
  expect_error([] { ZipReader z({}, "empty"); }, {"empty", "too small"});
  const std::vector<std::byte> zeros(100);
  expect_error([&] { ZipReader z(zeros, "zeros"); }, {"end-of-central-directory"});
  // A valid, empty archive has no entries, and is not a checkpoint.
  const auto empty = bytes_of(std::string_view("PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 22));
  ZipReader z(empty, "empty.zip");
  EXPECT_TRUE(z.entries().empty());
  const std::string path = temp_path("empty.zip");
  write_bytes(path, empty);
  expect_error([&] { read_pth(path); }, {"data.pkl"});
  std::filesystem::remove(path);
  // Entries are plain structs: read() re-checks what a caller hands it.
  const auto bytes = read_bytes(fixture("f32.pth"));
  ZipReader zip(bytes, "f32.pth");
  ZipEntry forged = *zip.find("f32/data.pkl");
  forged.data_offset = bytes.size() - 2;
  expect_error([&] { zip.read(forged); }, {"outside"});
  forged = *zip.find("f32/data.pkl");
  forged.method = 12;
  expect_error([&] { zip.read(forged); }, {"method 12"});
}

// ---------------------------------------------------------------------------
// The unpickler on hand-written streams.

// Streams are written as string literals, which may hold NUL bytes.
template <size_t N>
Unpickled pk(const char (&s)[N], const PickleLimits& limits = {}) {
  return unpickle(bytes_of(std::string_view(s, N - 1)), "test.pkl", limits);
}

TEST(Pickle, DecodesScalarsAndContainers) {
  // [-2, 300, 70000, -129, 2**40, 1.5, None, True, False, 'h\u00e9', (), {'k': 1}]
  const Unpickled u = pk(
      "\x80\x02]q\x00(J\xfe\xff\xff\xffM\x2c\x01J\x70\x11\x01\x00\x8a\x02\x7f\xff"
      "\x8a\x06\x00\x00\x00\x00\x00\x01G\x3f\xf8\x00\x00\x00\x00\x00\x00N\x88\x89"
      "\x8c\x03h\xc3\xa9)}X\x01\x00\x00\x00kK\x01se.");
  const PickleValue& root = u.root();
  ASSERT_EQ(root.kind, PickleKind::List);
  ASSERT_EQ(root.items.size(), 12u);
  EXPECT_EQ(root.items[0]->integer, -2);
  EXPECT_EQ(root.items[1]->integer, 300);
  EXPECT_EQ(root.items[2]->integer, 70000);
  EXPECT_EQ(root.items[3]->integer, -129);
  EXPECT_EQ(root.items[4]->integer, int64_t(1) << 40);
  EXPECT_EQ(root.items[5]->kind, PickleKind::Float);
  EXPECT_EQ(root.items[5]->real, 1.5);
  EXPECT_EQ(root.items[6]->kind, PickleKind::None);
  EXPECT_EQ(root.items[7]->kind, PickleKind::Bool);
  EXPECT_EQ(root.items[7]->integer, 1);
  EXPECT_EQ(root.items[8]->integer, 0);
  EXPECT_EQ(root.items[9]->text, "h\xc3\xa9");
  EXPECT_EQ(root.items[10]->kind, PickleKind::Tuple);
  EXPECT_TRUE(root.items[10]->items.empty());
  ASSERT_EQ(root.items[11]->kind, PickleKind::Dict);
  EXPECT_FALSE(root.items[11]->ordered);
  ASSERT_EQ(root.items[11]->items.size(), 2u);
  EXPECT_EQ(root.items[11]->items[0]->text, "k");
  EXPECT_EQ(root.items[11]->items[1]->integer, 1);
}

TEST(Pickle, MemoSharesObjects) {
  // l = []; d = {'a': 5}; l.append(d); d['b'] = 6 through the memo; l.append(d)
  const Unpickled u = pk("\x80\x02]}q\x01X\x01\x00\x00\x00" "aK\x05sah\x01X\x01\x00\x00\x00" "bK\x06sa.");
  const PickleValue& root = u.root();
  ASSERT_EQ(root.items.size(), 2u);
  EXPECT_EQ(root.items[0], root.items[1]);
  EXPECT_EQ(root.items[0]->items.size(), 4u);
}

TEST(Pickle, ErrorsNameOpcodeAndOffset) {
  expect_error([] { pk("\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00id\x85R."); },
               {"test.pkl", "forbidden global 'os.system'", "offset 2"});
  expect_error([] { pk("\x80\x02" "cbuiltins\neval\n."); }, {"'builtins.eval'", "offset 2"});
  expect_error([] { pk("\x80\x02K\x01(\x85."); }, {"underflow", "offset 5"});
  expect_error([] { pk("\x80\x02h\x03."); }, {"memo index 3", "offset 2"});
  expect_error([] { pk("\x80\x02K\x01K\x02."); }, {"STOP with 2 values"});
  expect_error([] { pk("\x80\x09."); }, {"protocol 9"});
  expect_error([] { pk("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09."); }, {"LONG1"});
  expect_error([] { pk("\x80\x02K\x01K\x02K\x03s."); }, {"SETITEM on a int"});
  expect_error([] { pk("\x80\x02]K\x01K\x02u."); }, {"SETITEMS without a MARK"});
  expect_error([] { pk("\x80\x02(K\x01."); }, {"open MARK"});
  expect_error([] { pk("\x80\x02" "ccollections\nOrderedDict\nK\x01\x85R."); }, {"called with arguments"});
  expect_error([] { pk("\x80\x02K\x01)R."); }, {"not callable"});
  expect_error([] { pk("\x80\x02(X\x07\x00\x00\x00storageK\x01K\x02K\x03K\x04tQ."); }, {"storage type"});
  expect_error([] { pk("\x80\x02K\x01Q."); }, {"persistent id"});
  expect_error([] { pk("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)R."); }, {"0 arguments"});
}

TEST(Pickle, ForbiddenOpcodesAreNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"i", "INST"},       {"o", "OBJ"},         {"\x81", "NEWOBJ"},   {"\x92", "NEWOBJ_EX"},
      {"\x82\x01", "EXT1"}, {"\x83", "EXT2"},    {"\x84", "EXT4"},     {"P", "PERSID"},
      {"0", "POP"},        {"2", "DUP"},         {"l", "LIST"},        {"d", "DICT"},
      {"S", "STRING"},     {"B", "BINBYTES"},    {"\x8f", "EMPTY_SET"}, {"\x8b", "LONG4"},
      {"I", "INT"},        {"F", "FLOAT"},       {"g", "GET"},         {"p", "PUT"},
      {"\x96", "BYTEARRAY8"}, {"\x97", "NEXT_BUFFER"}};
  for (const auto& [op, name] : cases) {
    SCOPED_TRACE(name);
    expect_error([&] { unpickle(bytes_of(std::string("\x80\x02N") + op + "."), "test.pkl"); },
                 {std::string("forbidden opcode ") + name + " (", "offset 3"});
  }
}

TEST(Pickle, EveryPrefixOfARealPickleIsAnError) {
  const auto bytes = read_bytes(fixture("module.pth"));
  ZipReader zip(bytes, "module.pth");
  const auto pkl = zip.read(*zip.find("module/data.pkl"));
  const Unpickled full = unpickle(pkl, "module.pkl");
  ASSERT_EQ(full.root().kind, PickleKind::Dict);
  EXPECT_TRUE(full.root().ordered);
  EXPECT_EQ(full.root().items.size(), 8u);  // 4 tensors
  for (size_t n = 0; n < pkl.size(); ++n) {
    // A copy of exactly n bytes, so that ASan sees any read past the end.
    std::vector<std::byte> cut(pkl.begin(), pkl.begin() + std::ptrdiff_t(n));
    expect_error([&] { unpickle(cut, "cut.pkl"); }, {"cut.pkl"});
  }
}

TEST(Pickle, LimitsBoundMemory) {
  PickleLimits small;
  small.max_stack = 10;
  small.max_memo = 4;
  small.max_values = 16;
  expect_error([&] { pk("\x80\x02(((((((((((((((.", small); }, {"deeper than 10"});
  expect_error([&] { pk("\x80\x02NNNNNNNNNNN.", small); }, {"deeper than 10"});
  expect_error([&] { pk("\x80\x02Nq\x00q\x01q\x02q\x03q\x04.", small); }, {"memo larger than 4"});
  expect_error([&] { pk("\x80\x02]" "(NNNNNNNNe(NNNNNNNNe.", small); }, {"more than 16 values"});
  // The same streams are fine within the default limits.
  EXPECT_EQ(pk("\x80\x02Nq\x00q\x01q\x02q\x03q\x04.").root().kind, PickleKind::None);
}

}  // namespace
}  // namespace rwkv
