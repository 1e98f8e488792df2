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

 private:
  MappedFile() = default;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace rwkv
