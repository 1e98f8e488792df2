// Read-only memory mapping of a whole file.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace rwkv {

class MappedFile {
 public:
  // Maps `path` read-only; throws rwkv::Error naming the path if it cannot.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  // Drops this process's pages of [p, p + n) when the range lies in this
  // mapping (the file's pages stay in the page cache; a later read maps them
  // again), so a tensor copied elsewhere stops counting twice in the RSS.
  // Returns whether the range was in the mapping.
  bool release(const void* p, size_t n) const;

 private:
  MappedFile() = default;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace rwkv
