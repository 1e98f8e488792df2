// A safe unpickler for the subset of Python pickles that torch.save writes for a
// state dict (dicts of tensors). It never calls anything: the few allowed
// globals are recognised by name and their effect is modelled in C++; any other
// global, any other opcode, or malformed input is an rwkv::Error that names the
// problem and its byte offset.
//
// Opcodes: PROTO (2-5), FRAME, STOP, MARK, NONE, NEWTRUE, NEWFALSE, BININT,
// BININT1, BININT2, LONG1 (<= 8 bytes), BINFLOAT, BINUNICODE, SHORT_BINUNICODE,
// BINUNICODE8, EMPTY_TUPLE, TUPLE, TUPLE1-3, EMPTY_LIST, APPEND, APPENDS,
// EMPTY_DICT, SETITEM, SETITEMS, BINPUT, LONG_BINPUT, MEMOIZE, BINGET,
// LONG_BINGET, GLOBAL, STACK_GLOBAL, BINPERSID, REDUCE, and BUILD only on an
// OrderedDict (module.state_dict() pickles its `_metadata` attribute that way;
// the state is ignored).
// Globals: collections.OrderedDict (called with no arguments),
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, and
// torch.<T>Storage type tags, which appear only inside persistent ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rwkv {

enum class PickleKind : uint8_t {
  None, Bool, Int, Float, String, Tuple, List, Dict,
  Global,   // an allowed global, text = "module.name"
  Storage,  // a persistent id ('storage', type, key, location, numel)
  Tensor,   // the result of _rebuild_tensor_v2 / _rebuild_parameter
};

// A storage as torch.save's persistent id describes it.
struct TorchStorage {
  std::string type;      // "torch.FloatStorage", "torch.HalfStorage", ...
  std::string key;       // its data lives in the zip entry <archive>/data/<key>
  std::string location;  // "cpu", "cuda:0", ...
  int64_t numel = 0;     // elements in the whole storage
};

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
// backward_hooks[, metadata]); values are as stored, not yet validated
// against the storage (offsets and sizes may be anything a file says).
struct TorchTensor {
  const TorchStorage* storage = nullptr;
  int64_t storage_offset = 0;
  std::vector<int64_t> shape;   // in elements
  std::vector<int64_t> stride;  // in elements, same length as shape
  bool requires_grad = false;
};

struct PickleValue {
  PickleKind kind = PickleKind::None;
  bool ordered = false;  // Dict made by collections.OrderedDict()
  int64_t integer = 0;   // Int; Bool as 0/1
  double real = 0;       // Float
  std::string text;      // String; Global
  // Tuple and List elements; Dict entries as key, value, key, value, ... in
  // insertion order (duplicate keys are kept: Python would overwrite).
  std::vector<const PickleValue*> items;
  std::unique_ptr<TorchStorage> storage;  // Storage
  std::unique_ptr<TorchTensor> tensor;    // Tensor
};

// "dict", "tensor", ... for error messages.
std::string_view pickle_kind_name(PickleKind kind);

// Owns every value of one unpickled stream.
class Unpickled {
 public:
  const PickleValue& root() const { return *root_; }

 private:
  friend class Unpickler;
  std::deque<PickleValue> values_;  // deque: values never move once created
  const PickleValue* root_ = nullptr;
};

// Hard limits that bound the memory a hostile stream can make us use; real
// state dicts need a few values per tensor.
struct PickleLimits {
  size_t max_stack = size_t(1) << 20;   // stack entries plus open MARKs
  size_t max_memo = size_t(1) << 20;    // memo entries
  size_t max_values = size_t(1) << 21;  // values created
};

// Unpickles `data`; `what` (e.g. "model.pth: archive/data.pkl") prefixes errors.
Unpickled unpickle(std::span<const std::byte> data, std::string_view what, const PickleLimits& limits = {});

}  // namespace rwkv
