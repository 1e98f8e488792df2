// A file's named tensors and metadata, independent of the container format.
// Readers (pth, rwkv.cpp bin, ...) produce a TensorArchive; they know nothing
// about RWKV. Tensor data is either a view into a memory-mapped file or a
// buffer owned by the archive; either way it lives as long as the archive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace rwkv {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // outermost dimension first (PyTorch order)
  const std::byte* data = nullptr;  // contiguous, row-major, aligned to dtype_size
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class TensorArchive {
 public:
  std::string format;  // "pth", "rwkv.cpp", ...
  std::string path;
  std::map<std::string, std::string> metadata;  // format-specific facts (e.g. rwkv.cpp header fields)
  // Array-valued metadata (GGUF): lists of strings (e.g. tokenizer.ggml.tokens)
  // and of numbers (integers, floats and bools, as doubles).
  std::map<std::string, std::vector<std::string>> string_lists;
  std::map<std::string, std::vector<double>> number_lists;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }

  // Adds a tensor; fails on a duplicate name. `data` must stay alive as long as
  // the archive: use keep_alive()/own() for its storage.
  void add(TensorInfo info);
  // Allocates an owned, 64-byte aligned buffer that lives with the archive.
  std::byte* own(size_t nbytes);
  void keep_alive(std::shared_ptr<const MappedFile> file) { files_.push_back(std::move(file)); }
  // For archives whose tensors view another archive's data (layout mappings).
  void keep_alive(std::shared_ptr<const TensorArchive> other) { archives_.push_back(std::move(other)); }
  // Drops the process's pages of a tensor's bytes if they lie in a mapped
  // file (see MappedFile::release); owned buffers are left alone.
  void release_pages(const void* p, size_t n) const;

 private:
  struct AlignedFree {
    void operator()(std::byte* p) const;
  };
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::unique_ptr<std::byte[], AlignedFree>> buffers_;
  std::vector<std::shared_ptr<const MappedFile>> files_;
  std::vector<std::shared_ptr<const TensorArchive>> archives_;
};

}  // namespace rwkv
