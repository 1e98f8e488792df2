// Opens a tensor file of any supported container, recognised by its content
// (never by its extension).
#pragma once

#include <memory>
#include <string>

#include "formats/tensor_archive.h"

namespace rwkv {

std::shared_ptr<const TensorArchive> open_tensor_archive(const std::string& path);

}  // namespace rwkv
