#include "formats/tensor_archive.h"

#include <cstdlib>

#include "core/error.h"

namespace rwkv {

const TensorInfo* TensorArchive::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void TensorArchive::add(TensorInfo info) {
  if (index_.count(info.name) != 0) fail("{}: duplicate tensor '{}'", path, info.name);
  index_.emplace(info.name, tensors_.size());
  tensors_.push_back(std::move(info));
}

void TensorArchive::AlignedFree::operator()(std::byte* p) const { std::free(p); }

std::byte* TensorArchive::own(size_t nbytes) {
  const size_t rounded = (nbytes + 63) / 64 * 64;
  auto* p = static_cast<std::byte*>(std::aligned_alloc(64, rounded == 0 ? 64 : rounded));
  if (p == nullptr) fail("{}: out of memory allocating {} bytes", path, nbytes);
  buffers_.emplace_back(p);
  return p;
}

void TensorArchive::release_pages(const void* p, size_t n) const {
  for (const auto& f : files_)
    if (f->release(p, n)) return;
  for (const auto& a : archives_) a->release_pages(p, n);
}

}  // namespace rwkv
