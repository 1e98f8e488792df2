// Loads any supported model file: detects the container from its content and
// the RWKV version from its tensors.
#pragma once

#include <memory>
#include <string>

#include "formats/tensor_archive.h"
#include "model/model.h"

namespace rwkv {

// The RWKV version the tensors describe; fails for layouts no version matches.
Arch detect_arch(const TensorArchive& archive);

std::unique_ptr<Model> load_model(const std::string& path);
std::unique_ptr<Model> load_model(std::shared_ptr<const TensorArchive> archive);

}  // namespace rwkv
