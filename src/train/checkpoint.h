// Model weights in and out of the trainer: official-layout .pth checkpoints
// (and any container the engine reads) to fp32 master weights and back.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "core/dtype.h"
#include "formats/tensor_archive.h"
#include "train/params.h"

namespace rwkv::train {

// The trainer's hyper-parameters read off an RWKV-7 state dict's shapes.
// Fails naming the tensor when it is missing or shaped wrongly.
TrainConfig infer_config(const TensorArchive& archive);

// Copies (widening) every tensor of `layout` from `archive` into params.
// Shapes must match exactly ([1,1,C] vectors may also be [C]); tensors the
// layout lacks, and missing ones, are errors naming them. The one exception:
// layer 0's value-residual tensors, unused by RWKV-7 and absent from some
// conversions, are zero when missing.
void load_params(const TensorArchive& archive, const ParamLayout& layout, std::span<float> params);

// The parameters as an archive of `dtype` (F32 or BF16) tensors in the
// official layout, owning its data: what write_pth saves and load_model reads.
std::shared_ptr<TensorArchive> make_archive(const ParamLayout& layout, std::span<const float> params, DType dtype);

// Writes an official-layout torch.save checkpoint atomically.
void save_pth(const std::string& path, const ParamLayout& layout, std::span<const float> params, DType dtype);

}  // namespace rwkv::train
