// Kept apart from checkpoint.cpp: the one piece that needs formats/pth_writer.
#include "formats/pth_writer.h"
#include "train/checkpoint.h"

namespace rwkv::train {

void save_pth(const std::string& path, const ParamLayout& layout, std::span<const float> params, DType dtype) {
  const auto archive = make_archive(layout, params, dtype);
  write_pth(path, archive->tensors());
}

}  // namespace rwkv::train
