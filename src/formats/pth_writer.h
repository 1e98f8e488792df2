// Writes a state dict as a real torch.save checkpoint (the zip format of
// torch >= 1.6) that torch.load and read_pth both accept: `<name>/data.pkl`
// (pickle protocol 2: an OrderedDict of torch._utils._rebuild_tensor_v2 calls
// whose storages are persistent ids ('storage', torch.<T>Storage, key, 'cpu',
// numel)), one STORED entry `<name>/data/<key>` per tensor with its data
// 64-byte aligned as torch aligns it, `<name>/byteorder` and `<name>/version`.
// ZIP64 records are written when sizes or offsets need them.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "formats/tensor_archive.h"

namespace rwkv {

struct PthWriteOptions {
  // The folder every entry lives in; empty: the output file's stem (what
  // torch.save uses), reduced to [A-Za-z0-9_-] ("archive" if nothing is left).
  std::string archive_name;
  // Writes ZIP64 records even for small files, so tests can exercise them.
  bool force_zip64 = false;
  // Stores every tensor as this type (converted piece by piece while writing,
  // round-to-nearest-even); unset: each keeps its own.
  std::optional<DType> dtype;
  // Called after each tensor with bytes of tensor data written so far and in all.
  std::function<void(size_t done, size_t total)> progress;
};

// Writes `tensors` in order (names must be unique; each `data` holds nbytes =
// numel * dtype_size contiguous row-major bytes) to `path` atomically: the
// file appears complete or not at all.
void write_pth(const std::string& path, std::span<const TensorInfo> tensors, const PthWriteOptions& options = {});

// Passes the bytes of `t` converted to `to` to `sink` in pieces of at most
// 64 MiB (the bytes themselves when `to` is t.dtype), so that writers convert
// without holding a converted copy of a whole model. f32, f16 and bf16 only.
void convert_in_pieces(const TensorInfo& t, DType to, const std::function<void(const std::byte*, size_t)>& sink);

}  // namespace rwkv
