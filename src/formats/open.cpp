#include "formats/open.h"

#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "formats/pth.h"
#include "formats/rwkvcpp.h"
#include "formats/safetensors.h"

namespace rwkv {

std::shared_ptr<const TensorArchive> open_tensor_archive(const std::string& path) {
  std::span<const std::byte> head;
  auto file = MappedFile::open(path);
  head = file->bytes().first(std::min<size_t>(file->size(), 16));
  if (file->size() == 0) fail("{}: file is empty", path);
  if (is_zip(head)) return std::make_shared<TensorArchive>(read_pth(path));
  if (is_rwkvcpp(head)) return std::make_shared<TensorArchive>(read_rwkvcpp(path));
  if (is_gguf(head)) return std::make_shared<TensorArchive>(read_gguf(path));
  if (is_safetensors(head, file->size())) return std::make_shared<TensorArchive>(read_safetensors(path));
  if (head.size() >= 2 && head[0] == std::byte{0x80} && head[1] <= std::byte{5})
    fail("{}: this is a bare pickle (PyTorch's legacy pre-1.6 format); re-save it with a current torch.save", path);
  fail("{}: unrecognised model file format", path);
}

}  // namespace rwkv
