#include "formats/zip.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "core/error.h"

namespace rwkv {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kEnd64Size = 56;
constexpr size_t kEnd64LocatorSize = 20;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;
// DEFLATE cannot expand data by more than about 1032:1, so a larger declared
// size is a lie that must not drive an allocation.
constexpr uint64_t kMaxDeflateRatio = 1032;

// Little-endian loads; callers have already checked the bounds.
uint16_t le16(const std::byte* p) { return uint16_t(uint16_t(p[0]) | uint16_t(p[1]) << 8); }
uint32_t le32(const std::byte* p) { return uint32_t(le16(p)) | uint32_t(le16(p + 2)) << 16; }
uint64_t le64(const std::byte* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

// True if [offset, offset + size) lies within [0, limit), without overflow.
bool fits(uint64_t offset, uint64_t size, uint64_t limit) {
  return offset <= limit && size <= limit - offset;
}

uint32_t crc32_of(std::span<const std::byte> data) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(data.data());
  size_t left = data.size();
  while (left > 0) {  // zlib takes uInt lengths
    const uInt n = uInt(std::min<size_t>(left, 1u << 30));
    crc = crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return uint32_t(crc);
}

}  // namespace

ZipReader::ZipReader(std::span<const std::byte> bytes, std::string what)
    : bytes_(bytes), what_(std::move(what)) {
  parse();
}

void ZipReader::parse() {
  const std::byte* base = bytes_.data();
  const uint64_t size = bytes_.size();
  if (size < kEndSize) fail("{}: too small to be a zip file ({} bytes; truncated?)", what_, size);

  // The end record sits at the end, followed only by a comment of up to 64 KiB;
  // the last signature whose comment length reaches no further than the end wins.
  uint64_t end = 0;
  bool found = false;
  const uint64_t lowest = size - kEndSize > 0xffff ? size - kEndSize - 0xffff : 0;
  for (uint64_t pos = size - kEndSize + 1; pos-- > lowest;) {
    if (le32(base + pos) == kEndSig && le16(base + pos + 20) <= size - kEndSize - pos) {
      end = pos;
      found = true;
      break;
    }
  }
  if (!found) fail("{}: no zip end-of-central-directory record (truncated or not a zip file)", what_);

  const std::byte* e = base + end;
  uint64_t disk = le16(e + 4), cd_disk = le16(e + 6);
  uint64_t count = le16(e + 10);
  uint64_t cd_size = le32(e + 12), cd_offset = le32(e + 16);
  uint64_t dir_end = end;  // the central directory must end before this

  const bool needs64 = count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff;
  const bool has_locator =
      end >= kEnd64LocatorSize && le32(base + end - kEnd64LocatorSize) == kEnd64LocatorSig;
  if (needs64 && !has_locator) fail("{}: zip end record needs ZIP64 but has no ZIP64 locator", what_);
  if (has_locator) {
    const uint64_t locator = end - kEnd64LocatorSize;
    const uint64_t rec = le64(base + locator + 8);
    if (!fits(rec, kEnd64Size, locator) || le32(base + rec) != kEnd64Sig)
      fail("{}: bad ZIP64 end-of-central-directory offset {}", what_, rec);
    const std::byte* r = base + rec;
    disk = le32(r + 16);
    cd_disk = le32(r + 20);
    count = le64(r + 32);
    cd_size = le64(r + 40);
    cd_offset = le64(r + 48);
    dir_end = rec;
  }
  if (disk != 0 || cd_disk != 0) fail("{}: multi-disk zip files are not supported", what_);
  if (!fits(cd_offset, cd_size, dir_end))
    fail("{}: zip central directory (offset {}, size {}) lies outside the file (truncated?)",
         what_, cd_offset, cd_size);
  if (count > cd_size / kCentralSize)
    fail("{}: zip claims {} entries but its central directory holds at most {}", what_, count,
         cd_size / kCentralSize);
  data_end_ = cd_offset;

  entries_.reserve(count);
  const uint64_t cd_end = cd_offset + cd_size;
  uint64_t p = cd_offset;
  for (uint64_t i = 0; i < count; ++i) {
    if (!fits(p, kCentralSize, cd_end) || le32(base + p) != kCentralSig)
      fail("{}: bad zip central directory entry {} at offset {}", what_, i, p);
    const std::byte* c = base + p;
    ZipEntry entry;
    entry.flags = le16(c + 8);
    entry.method = le16(c + 10);
    entry.crc32 = le32(c + 16);
    entry.compressed_size = le32(c + 20);
    entry.uncompressed_size = le32(c + 24);
    const uint64_t name_len = le16(c + 28), extra_len = le16(c + 30), comment_len = le16(c + 32);
    uint64_t start_disk = le16(c + 34);
    entry.local_header_offset = le32(c + 42);
    if (!fits(p + kCentralSize, name_len + extra_len + comment_len, cd_end))
      fail("{}: zip central directory entry {} overruns the directory", what_, i);
    entry.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);

    // ZIP64 extra field: 64-bit values, present only for the 32-bit fields
    // that hold their all-ones placeholder, in this order.
    const std::byte* x = c + kCentralSize + name_len;
    for (uint64_t off = 0; off + 4 <= extra_len;) {
      const uint16_t id = le16(x + off);
      const uint64_t len = le16(x + off + 2);
      if (len > extra_len - off - 4) fail("{}: zip entry '{}' has a bad extra field", what_, entry.name);
      if (id == 0x0001) {
        const std::byte* f = x + off + 4;
        uint64_t used = 0;
        auto next64 = [&](uint64_t& field) {
          if (used + 8 > len) fail("{}: zip entry '{}' has a short ZIP64 extra field", what_, entry.name);
          field = le64(f + used);
          used += 8;
        };
        if (entry.uncompressed_size == 0xffffffff) next64(entry.uncompressed_size);
        if (entry.compressed_size == 0xffffffff) next64(entry.compressed_size);
        if (entry.local_header_offset == 0xffffffff) next64(entry.local_header_offset);
        if (start_disk == 0xffff) {
          if (used + 4 > len) fail("{}: zip entry '{}' has a short ZIP64 extra field", what_, entry.name);
          start_disk = le32(f + used);
        }
      }
      off += 4 + len;
    }
    p += kCentralSize + name_len + extra_len + comment_len;

    if (entry.name.empty()) fail("{}: zip entry {} has an empty name", what_, i);
    if (start_disk != 0) fail("{}: zip entry '{}' is on another disk", what_, entry.name);
    if (entry.flags & 0x41)  // bit 0: encrypted, bit 6: strong encryption
      fail("{}: zip entry '{}' is encrypted, which is not supported", what_, entry.name);
    if (entry.method != kStored && entry.method != kDeflate)
      fail("{}: zip entry '{}' uses compression method {}; only STORED (0) and DEFLATE (8) are supported",
           what_, entry.name, entry.method);
    if (entry.method == kStored && entry.compressed_size != entry.uncompressed_size)
      fail("{}: STORED zip entry '{}' has compressed size {} != uncompressed size {}", what_, entry.name,
           entry.compressed_size, entry.uncompressed_size);
    if (entry.method == kDeflate &&
        entry.uncompressed_size / kMaxDeflateRatio > entry.compressed_size + 1)
      fail("{}: zip entry '{}' claims {} bytes from {} compressed bytes, which is impossible", what_,
           entry.name, entry.uncompressed_size, entry.compressed_size);

    // The local header repeats the name and may carry a different extra field
    // (torch pads it so that the data is 64-byte aligned); its sizes may be zero
    // when a data descriptor follows, so only the central directory's are used.
    const uint64_t lo = entry.local_header_offset;
    if (!fits(lo, kLocalSize, data_end_) || le32(base + lo) != kLocalSig)
      fail("{}: zip entry '{}' has a bad local header offset {}", what_, entry.name, lo);
    const uint64_t local_name = le16(base + lo + 26), local_extra = le16(base + lo + 28);
    if (!fits(lo + kLocalSize, local_name + local_extra, data_end_) ||
        std::string_view(reinterpret_cast<const char*>(base + lo + kLocalSize), local_name) != entry.name)
      fail("{}: zip entry '{}' has a local header that does not match the central directory", what_,
           entry.name);
    entry.data_offset = lo + kLocalSize + local_name + local_extra;
    if (!fits(entry.data_offset, entry.compressed_size, data_end_))
      fail("{}: zip entry '{}' ({} bytes at offset {}) extends past its end of data (truncated?)", what_,
           entry.name, entry.compressed_size, entry.data_offset);

    if (!index_.emplace(entry.name, entries_.size()).second)
      fail("{}: duplicate zip entry '{}'", what_, entry.name);
    entries_.push_back(std::move(entry));
  }
}

const ZipEntry* ZipReader::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

std::span<const std::byte> ZipReader::read(const ZipEntry& entry) {
  // Entries are plain structs a caller could have altered: re-check bounds.
  if (!fits(entry.data_offset, entry.compressed_size, data_end_))
    fail("{}: zip entry '{}' lies outside the file", what_, entry.name);
  const std::byte* src = bytes_.data() + entry.data_offset;
  if (entry.method == kStored) {
    if (entry.compressed_size != entry.uncompressed_size)
      fail("{}: STORED zip entry '{}' has inconsistent sizes", what_, entry.name);
    return {src, size_t(entry.compressed_size)};
  }
  if (entry.method != kDeflate)
    fail("{}: zip entry '{}' uses unsupported compression method {}", what_, entry.name, entry.method);
  if (auto it = inflated_.find(entry.data_offset); it != inflated_.end()) {
    if (it->second.size() != entry.uncompressed_size)
      fail("{}: zip entry '{}' read with inconsistent sizes", what_, entry.name);
    return it->second;
  }
  if (entry.uncompressed_size / kMaxDeflateRatio > entry.compressed_size + 1 ||
      entry.uncompressed_size > std::numeric_limits<size_t>::max() / 2)
    fail("{}: zip entry '{}' claims an impossible uncompressed size {}", what_, entry.name,
         entry.uncompressed_size);

  // The output grows with what is actually inflated rather than with what the
  // header claims. One spare byte detects a stream longer than declared.
  const size_t want = size_t(entry.uncompressed_size);
  std::vector<std::byte> out;
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail("{}: cannot initialise zlib", what_);
  auto give_up = [&](std::string_view why) {
    inflateEnd(&zs);
    fail("{}: zip entry '{}' {}", what_, entry.name, why);
  };
  constexpr uint64_t kChunk = uint64_t(1) << 30;  // zlib counts in uInt
  const uint64_t in_size = entry.compressed_size;
  uint64_t in_used = 0;
  size_t produced = 0;
  for (;;) {
    if (zs.avail_in == 0 && in_used < in_size) {
      const uInt n = uInt(std::min(in_size - in_used, kChunk));
      zs.next_in = const_cast<Bytef*>(reinterpret_cast<const Bytef*>(src + in_used));
      zs.avail_in = n;
      in_used += n;
    }
    if (produced == out.size()) {
      if (out.size() == want + 1) give_up(fmt::format("inflates to more than its declared {} bytes", want));
      out.resize(std::min(want + 1, std::max<size_t>(out.size() * 2, size_t(1) << 16)));
    }
    const size_t room = size_t(std::min<uint64_t>(out.size() - produced, kChunk));
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs.avail_out = uInt(room);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    produced += room - zs.avail_out;
    if (rc == Z_STREAM_END) break;
    // With output room available, "no progress" means the input ran out.
    if (rc == Z_BUF_ERROR) give_up("has a truncated DEFLATE stream");
    if (rc != Z_OK) give_up(fmt::format("has corrupt DEFLATE data ({})", zs.msg ? zs.msg : "unknown error"));
  }
  inflateEnd(&zs);
  if (produced > want)
    fail("{}: zip entry '{}' inflates to more than its declared {} bytes", what_, entry.name, want);
  if (produced != want)
    fail("{}: zip entry '{}' inflates to {} bytes but declares {}", what_, entry.name, produced, want);
  out.resize(produced);
  if (crc32_of(out) != entry.crc32) fail("{}: zip entry '{}' fails its CRC-32 check", what_, entry.name);
  return inflated_.emplace(entry.data_offset, std::move(out)).first->second;
}

void ZipReader::verify_crc(const ZipEntry& entry) {
  if (crc32_of(read(entry)) != entry.crc32) fail("{}: zip entry '{}' fails its CRC-32 check", what_, entry.name);
}

}  // namespace rwkv
