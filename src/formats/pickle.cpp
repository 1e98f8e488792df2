#include "formats/pickle.h"

#include <bit>
#include <cstring>
#include <unordered_map>

#include "core/error.h"

namespace rwkv {
namespace {

// Every opcode of protocols 0-5, so that a rejected one is reported by name.
std::string_view opcode_name(uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return {};
  }
}

constexpr std::string_view kOrderedDict = "collections.OrderedDict";
constexpr std::string_view kRebuildTensor = "torch._utils._rebuild_tensor_v2";
constexpr std::string_view kRebuildParameter = "torch._utils._rebuild_parameter";

// Storage types are inert tags inside persistent ids; accepting every real one
// lets the checkpoint reader name an unsupported dtype instead of a "global".
bool is_storage_type(std::string_view name) {
  static constexpr std::string_view kTypes[] = {
      "torch.FloatStorage",   "torch.HalfStorage",   "torch.BFloat16Storage",
      "torch.DoubleStorage",  "torch.LongStorage",   "torch.IntStorage",
      "torch.ShortStorage",   "torch.CharStorage",   "torch.ByteStorage",
      "torch.BoolStorage",    "torch.ComplexFloatStorage", "torch.ComplexDoubleStorage",
      "torch.QInt8Storage",   "torch.QUInt8Storage", "torch.QInt32Storage",
      "torch.QUInt4x2Storage", "torch.QUInt2x4Storage"};
  for (std::string_view t : kTypes)
    if (t == name) return true;
  return false;
}

bool is_allowed_global(std::string_view name) {
  return name == kOrderedDict || name == kRebuildTensor || name == kRebuildParameter ||
         is_storage_type(name);
}

}  // namespace

std::string_view pickle_kind_name(PickleKind k) {
  switch (k) {
    case PickleKind::None: return "None";
    case PickleKind::Bool: return "bool";
    case PickleKind::Int: return "int";
    case PickleKind::Float: return "float";
    case PickleKind::String: return "str";
    case PickleKind::Tuple: return "tuple";
    case PickleKind::List: return "list";
    case PickleKind::Dict: return "dict";
    case PickleKind::Global: return "global";
    case PickleKind::Storage: return "storage";
    case PickleKind::Tensor: return "tensor";
  }
  return "?";
}

namespace {

// Printable form of untrusted text for error messages.
std::string quoted(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f) out += c;
    else out += fmt::format("\\x{:02x}", uint8_t(c));
  }
  if (s.size() > 200) out += "...";
  return out;
}

}  // namespace

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> data, std::string_view what, const PickleLimits& limits)
      : data_(data), what_(what), limits_(limits) {}

  Unpickled run();

 private:
  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: {} at offset {} of the pickle", what_, fmt::format(format, std::forward<Args>(args)...), op_pos_);
  }

  // Reads n raw bytes of the current opcode's argument.
  const std::byte* take(uint64_t n) {
    if (n > data_.size() - pos_) error("truncated pickle: {} needs {} more bytes", op_name_, n);
    const std::byte* p = data_.data() + pos_;
    pos_ += size_t(n);
    return p;
  }
  uint64_t read_le(size_t n) {
    const std::byte* p = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
    return v;
  }
  std::string read_text(uint64_t n) {
    const std::byte* p = take(n);
    return std::string(reinterpret_cast<const char*>(p), size_t(n));
  }
  std::string read_line() {
    const std::byte* start = data_.data() + pos_;
    const void* nl = std::memchr(start, '\n', data_.size() - pos_);
    if (nl == nullptr) error("truncated pickle: unterminated {} argument", op_name_);
    const size_t n = size_t(static_cast<const std::byte*>(nl) - start);
    std::string s(reinterpret_cast<const char*>(start), n);
    pos_ += n + 1;
    return s;
  }

  PickleValue* make(PickleKind kind) {
    if (out_.values_.size() >= limits_.max_values)
      error("pickle creates more than {} values", limits_.max_values);
    PickleValue& v = out_.values_.emplace_back();
    v.kind = kind;
    return &v;
  }
  void push(PickleValue* v) {
    if (stack_.size() + marks_.size() >= limits_.max_stack)
      error("pickle stack deeper than {}", limits_.max_stack);
    stack_.push_back(v);
  }
  // Values above the innermost MARK are the only ones reachable, as in Python.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  PickleValue* pop() {
    if (stack_.size() <= floor()) error("pickle stack underflow in {}", op_name_);
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValue* top() {
    if (stack_.size() <= floor()) error("pickle stack underflow in {}", op_name_);
    return stack_.back();
  }
  // Removes and returns the values pushed since the innermost MARK.
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) error("{} without a MARK", op_name_);
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> items(stack_.begin() + std::ptrdiff_t(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  void memo_put(uint64_t index) {
    PickleValue* v = top();
    auto it = memo_.find(index);
    if (it != memo_.end()) {
      it->second = v;
      return;
    }
    if (memo_.size() >= limits_.max_memo) error("pickle memo larger than {} entries", limits_.max_memo);
    memo_.emplace(index, v);
  }
  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) error("{} of memo index {}, which was never stored", op_name_, index);
    push(it->second);
  }

  void push_int(int64_t v) {
    PickleValue* p = make(PickleKind::Int);
    p->integer = v;
    push(p);
  }
  void push_global(std::string module, std::string name) {
    std::string full = module + "." + name;
    if (!is_allowed_global(full)) error("forbidden global '{}'", quoted(full));
    PickleValue* g = make(PickleKind::Global);
    g->text = std::move(full);
    push(g);
  }
  void tuple_of(std::vector<PickleValue*> items) {
    PickleValue* t = make(PickleKind::Tuple);
    t->items.assign(items.begin(), items.end());
    push(t);
  }
  void set_items(PickleValue* dict, const std::vector<PickleValue*>& kv) {
    if (dict->kind != PickleKind::Dict) error("{} on a {}, not a dict", op_name_, pickle_kind_name(dict->kind));
    if (kv.size() % 2 != 0) error("{} with an odd number of keys and values", op_name_);
    dict->items.insert(dict->items.end(), kv.begin(), kv.end());
  }
  void append_items(PickleValue* list, const std::vector<PickleValue*>& items) {
    if (list->kind != PickleKind::List) error("{} on a {}, not a list", op_name_, pickle_kind_name(list->kind));
    list->items.insert(list->items.end(), items.begin(), items.end());
  }

  void persistent_load();
  void reduce();
  PickleValue* rebuild_tensor(const PickleValue& args);

  std::span<const std::byte> data_;
  std::string_view what_;
  PickleLimits limits_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::string_view op_name_;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
  Unpickled out_;
};

void Unpickler::persistent_load() {
  // torch.save's persistent_id for a storage: ('storage', type, key, location, numel).
  const PickleValue* pid = pop();
  const auto& f = pid->items;
  if (pid->kind != PickleKind::Tuple || f.size() != 5 || f[0]->kind != PickleKind::String ||
      f[0]->text != "storage")
    error("unsupported persistent id (expected a ('storage', type, key, location, numel) tuple)");
  if (f[1]->kind != PickleKind::Global || !is_storage_type(f[1]->text))
    error("persistent id has a storage type that is a {}, not a torch storage type", pickle_kind_name(f[1]->kind));
  if (f[2]->kind != PickleKind::String || f[3]->kind != PickleKind::String || f[4]->kind != PickleKind::Int)
    error("persistent id has a malformed key, location or size");
  if (f[4]->integer < 0) error("persistent id has a negative storage size {}", f[4]->integer);
  PickleValue* s = make(PickleKind::Storage);
  s->storage = std::make_unique<TorchStorage>(TorchStorage{f[1]->text, f[2]->text, f[3]->text, f[4]->integer});
  push(s);
}

PickleValue* Unpickler::rebuild_tensor(const PickleValue& args) {
  const auto& a = args.items;
  if (a.size() != 6 && a.size() != 7)
    error("{} called with {} arguments, expected 6 or 7", kRebuildTensor, a.size());
  if (a[0]->kind != PickleKind::Storage) error("{}: argument 1 is a {}, not a storage", kRebuildTensor, pickle_kind_name(a[0]->kind));
  if (a[1]->kind != PickleKind::Int) error("{}: storage offset is a {}, not an int", kRebuildTensor, pickle_kind_name(a[1]->kind));
  if (a[2]->kind != PickleKind::Tuple || a[3]->kind != PickleKind::Tuple)
    error("{}: size and stride must be tuples", kRebuildTensor);
  if (a[2]->items.size() != a[3]->items.size())
    error("{}: size has {} dimensions but stride has {}", kRebuildTensor, a[2]->items.size(), a[3]->items.size());
  if (a[4]->kind != PickleKind::Bool) error("{}: requires_grad is a {}, not a bool", kRebuildTensor, pickle_kind_name(a[4]->kind));
  if (a[5]->kind != PickleKind::Dict) error("{}: backward_hooks is a {}, not a dict", kRebuildTensor, pickle_kind_name(a[5]->kind));
  if (a.size() == 7) {
    // Newer torch adds {'conj': True} / {'neg': True} for lazily conjugated
    // or negated views; their stored values are not the tensor's values.
    if (a[6]->kind != PickleKind::Dict) error("{}: metadata is a {}, not a dict", kRebuildTensor, pickle_kind_name(a[6]->kind));
    const auto& m = a[6]->items;
    for (size_t i = 0; i + 1 < m.size(); i += 2) {
      if (m[i]->kind != PickleKind::String || m[i + 1]->kind != PickleKind::Bool)
        error("{}: metadata must map str to bool", kRebuildTensor);
      if (m[i + 1]->integer != 0) error("unsupported tensor metadata '{}' (e.g. a lazily negated view)", quoted(m[i]->text));
    }
  }
  auto t = std::make_unique<TorchTensor>();
  t->storage = a[0]->storage.get();
  t->storage_offset = a[1]->integer;
  for (size_t d = 0; d < a[2]->items.size(); ++d) {
    const PickleValue* size = a[2]->items[d];
    const PickleValue* stride = a[3]->items[d];
    if (size->kind != PickleKind::Int || stride->kind != PickleKind::Int)
      error("{}: size and stride must hold ints", kRebuildTensor);
    t->shape.push_back(size->integer);
    t->stride.push_back(stride->integer);
  }
  t->requires_grad = a[4]->integer != 0;
  PickleValue* v = make(PickleKind::Tensor);
  v->tensor = std::move(t);
  return v;
}

void Unpickler::reduce() {
  const PickleValue* args = pop();
  const PickleValue* callable = pop();
  if (callable->kind != PickleKind::Global) error("REDUCE on a {}, which is not callable", pickle_kind_name(callable->kind));
  if (args->kind != PickleKind::Tuple) error("REDUCE of {} with {} arguments, not a tuple", callable->text, pickle_kind_name(args->kind));
  const std::string& name = callable->text;
  if (name == kOrderedDict) {
    if (!args->items.empty()) error("{} called with arguments", kOrderedDict);
    PickleValue* d = make(PickleKind::Dict);
    d->ordered = true;
    push(d);
  } else if (name == kRebuildTensor) {
    push(rebuild_tensor(*args));
  } else if (name == kRebuildParameter) {
    // _rebuild_parameter(data, requires_grad, backward_hooks): a Parameter is
    // just its tensor here.
    const auto& a = args->items;
    if (a.size() != 3 || a[0]->kind != PickleKind::Tensor || a[1]->kind != PickleKind::Bool ||
        a[2]->kind != PickleKind::Dict)
      error("{} called with unexpected arguments", kRebuildParameter);
    // Tensors are never mutated, so handing out a non-const pointer is safe.
    push(const_cast<PickleValue*>(a[0]));
  } else {
    error("forbidden call of '{}'", name);
  }
}

Unpickled Unpickler::run() {
  for (;;) {
    op_pos_ = pos_;
    if (pos_ >= data_.size()) error("truncated pickle: no STOP opcode");
    const uint8_t op = uint8_t(data_[pos_++]);
    op_name_ = opcode_name(op);
    switch (op) {
      case 0x80: {  // PROTO
        const uint64_t v = read_le(1);
        if (v < 2 || v > 5) error("unsupported pickle protocol {}", v);
        break;
      }
      case 0x95: {  // FRAME: only a hint for buffering; check it and go on
        const uint64_t n = read_le(8);
        if (n > data_.size() - pos_) error("truncated pickle: FRAME of {} bytes", n);
        break;
      }
      case '.': {  // STOP
        if (!marks_.empty()) error("STOP with an open MARK");
        if (stack_.size() != 1) error("STOP with {} values on the stack, expected 1", stack_.size());
        out_.root_ = stack_.back();
        return std::move(out_);
      }
      case '(':  // MARK
        if (stack_.size() + marks_.size() >= limits_.max_stack)
          error("pickle stack deeper than {}", limits_.max_stack);
        marks_.push_back(stack_.size());
        break;
      case 'N': push(make(PickleKind::None)); break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        PickleValue* b = make(PickleKind::Bool);
        b->integer = op == 0x88;
        push(b);
        break;
      }
      case 'J': push_int(int32_t(uint32_t(read_le(4)))); break;  // BININT
      case 'K': push_int(int64_t(read_le(1))); break;             // BININT1
      case 'M': push_int(int64_t(read_le(2))); break;             // BININT2
      case 0x8a: {  // LONG1: little-endian two's complement of n bytes
        const uint64_t n = read_le(1);
        if (n > 8) error("LONG1 integer of {} bytes is too large", n);
        uint64_t v = read_le(size_t(n));
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) != 0) v |= ~uint64_t(0) << (8 * n);  // sign-extend
        push_int(int64_t(v));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        const std::byte* p = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = bits << 8 | uint64_t(p[i]);
        PickleValue* f = make(PickleKind::Float);
        f->real = std::bit_cast<double>(bits);
        push(f);
        break;
      }
      case 'X':     // BINUNICODE
      case 0x8c:    // SHORT_BINUNICODE
      case 0x8d: {  // BINUNICODE8
        const uint64_t n = read_le(op == 'X' ? 4 : op == 0x8c ? 1 : 8);
        PickleValue* s = make(PickleKind::String);
        s->text = read_text(n);  // take() checks n against the bytes left
        push(s);
        break;
      }
      case ')': tuple_of({}); break;  // EMPTY_TUPLE
      case 't': tuple_of(pop_mark()); break;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1-3
        std::vector<PickleValue*> items(size_t(op - 0x84));
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        tuple_of(std::move(items));
        break;
      }
      case ']': push(make(PickleKind::List)); break;  // EMPTY_LIST
      case 'a': {  // APPEND
        PickleValue* v = pop();
        append_items(top(), {v});
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        append_items(top(), items);
        break;
      }
      case '}': push(make(PickleKind::Dict)); break;  // EMPTY_DICT
      case 's': {  // SETITEM
        PickleValue* v = pop();
        PickleValue* k = pop();
        set_items(top(), {k, v});
        break;
      }
      case 'u': {  // SETITEMS
        auto kv = pop_mark();
        set_items(top(), kv);
        break;
      }
      case 'q': memo_put(read_le(1)); break;   // BINPUT
      case 'r': memo_put(read_le(4)); break;   // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
      case 'h': memo_get(read_le(1)); break;   // BINGET
      case 'j': memo_get(read_le(4)); break;   // LONG_BINGET
      case 'c': {  // GLOBAL "module\nname\n"
        std::string module = read_line();
        std::string name = read_line();
        push_global(std::move(module), std::move(name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const PickleValue* name = pop();
        const PickleValue* module = pop();
        if (module->kind != PickleKind::String || name->kind != PickleKind::String)
          error("STACK_GLOBAL with non-string module or name");
        push_global(module->text, name->text);
        break;
      }
      case 'Q': persistent_load(); break;  // BINPERSID
      case 'R': reduce(); break;           // REDUCE
      case 'b': {  // BUILD: only OrderedDict's attribute dict (state_dict()._metadata)
        const PickleValue* state = pop();
        const PickleValue* target = top();
        if (target->kind != PickleKind::Dict || !target->ordered || state->kind != PickleKind::Dict)
          error("forbidden opcode BUILD (0x62) on a {}", pickle_kind_name(target->kind));
        break;
      }
      default:
        if (op_name_.empty()) error("unknown opcode 0x{:02x}", op);
        error("forbidden opcode {} (0x{:02x})", op_name_, op);
    }
  }
}

Unpickled unpickle(std::span<const std::byte> data, std::string_view what, const PickleLimits& limits) {
  return Unpickler(data, what, limits).run();
}

}  // namespace rwkv
