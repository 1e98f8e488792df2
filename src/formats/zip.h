// Minimal read-only ZIP reader over bytes already in memory (usually a mapped
// file). It exists to read torch.save checkpoints, so it supports exactly what
// those need: STORED and DEFLATE entries, ZIP64, one disk. Every offset and size
// from the file is checked against the input before it is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rwkv {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = STORED, 8 = DEFLATE (nothing else is accepted)
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // first byte of the (compressed) data in the input
};

class ZipReader {
 public:
  static constexpr uint16_t kStored = 0;
  static constexpr uint16_t kDeflate = 8;

  // Parses the central directory of `bytes`, which must outlive the reader;
  // `what` (usually the file path) prefixes every error message.
  ZipReader(std::span<const std::byte> bytes, std::string what);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(std::string_view name) const;

  // The entry's uncompressed bytes: a view into the input for STORED entries;
  // DEFLATE entries are inflated on first use and cached in the reader, so the
  // span lives as long as the reader.
  std::span<const std::byte> read(const ZipEntry& entry);
  // Throws unless the entry's bytes match its CRC-32. Not done by read() for
  // STORED entries because it would touch every page of a multi-GB mapping.
  void verify_crc(const ZipEntry& entry);

 private:
  void parse();
  std::span<const std::byte> bytes_;
  std::string what_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::map<uint64_t, std::vector<std::byte>> inflated_;  // by data_offset
  uint64_t data_end_ = 0;  // entries' data must end before the central directory
};

}  // namespace rwkv
