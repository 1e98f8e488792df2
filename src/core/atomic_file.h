// Writes a file so that readers see either the old file or the complete new
// one: data goes to a temporary file beside the target, which is renamed over
// the target on commit() and removed if the writer is destroyed before that.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace rwkv {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

}  // namespace rwkv
