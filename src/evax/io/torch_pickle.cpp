#include "evax/io/torch_pickle.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "evax/core/error.h"

namespace evax {

using Kind = PickleValue::Kind;

const PickleValue* PickleValue::get(const std::string& key) const {
  if (!is_mapping()) return nullptr;
  for (const auto& [k, v] : entries)
    if (k->kind == Kind::kString && k->text == key) return v;
  return nullptr;
}

std::string PickleValue::type_name() const {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kBytes: return "bytes";
    case Kind::kList: return "list";
    case Kind::kTuple: return "tuple";
    case Kind::kSet: return "set";
    case Kind::kDict: return "dict";
    case Kind::kTensor: return "tensor";
    case Kind::kStorage: return "storage";
    case Kind::kObject: return text;
  }
  return "?";
}

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(type);
  }
}

std::string printable(const std::string& text) {
  std::string out;
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      const char* hex = "0123456789abcdef";
      out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

namespace {

// Python's repr-like quoting for short listings; long text is cut at a UTF-8 boundary.
std::string quoted(const std::string& s, size_t max_len = 40) {
  if (s.size() <= max_len) return "'" + printable(s) + "'";
  size_t cut = max_len;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80) --cut;
  return "'" + printable(s.substr(0, cut)) + "...'";
}

bool is_simple(const PickleValue* v) {
  switch (v->kind) {
    case Kind::kNone:
    case Kind::kBool:
    case Kind::kInt:
    case Kind::kFloat:
    case Kind::kString: return true;
    default: return false;
  }
}

std::string simple_repr(const PickleValue* v) {
  std::ostringstream os;
  switch (v->kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return v->boolean ? "True" : "False";
    case Kind::kInt: return std::to_string(v->integer);
    case Kind::kFloat: os << v->real; return os.str();
    case Kind::kString: return quoted(v->text);
    default: return v->type_name();
  }
}

}  // namespace

std::string pickle_describe(const PickleValue& v) {
  auto count = [](size_t n, const char* what) { return str_cat(" (", n, " ", what, ")"); };
  switch (v.kind) {
    case Kind::kNone: return "None";
    case Kind::kBool:
    case Kind::kInt:
    case Kind::kFloat: return v.type_name() + " " + simple_repr(&v);
    case Kind::kString: return "str " + quoted(v.text);
    case Kind::kBytes: return str_cat("bytes (", v.text.size(), ")");
    case Kind::kList:
    case Kind::kTuple:
    case Kind::kSet:
      return v.type_name() + count(v.items.size(), v.items.size() == 1 ? "item" : "items");
    case Kind::kDict:
      return "dict" + count(v.entries.size(), v.entries.size() == 1 ? "entry" : "entries");
    case Kind::kTensor: {
      std::string s = "tensor " + dtype_name(v.tensor.scalar_type()) + " [";
      for (int64_t d = 0; d < v.tensor.dim(); ++d)
        s += (d ? ", " : "") + std::to_string(v.tensor.size(d));
      return s + "]";
    }
    case Kind::kStorage:
      return str_cat("storage ", dtype_name(v.tensor.scalar_type()), " (", v.tensor.numel(),
                     " elements)");
    case Kind::kObject: {
      if (!v.args || v.args->kind != Kind::kTuple || v.args->items.empty() ||
          v.args->items.size() > 4 ||
          !std::all_of(v.args->items.begin(), v.args->items.end(), is_simple))
        return v.text;
      std::string s = v.text + "(";
      for (size_t i = 0; i < v.args->items.size(); ++i)
        s += (i ? ", " : "") + simple_repr(v.args->items[i]);
      return s + ")";
    }
  }
  return v.type_name();
}

std::string pickle_key_text(const PickleValue& key) {
  switch (key.kind) {
    case Kind::kString: return key.text;
    case Kind::kInt:
    case Kind::kBool: return simple_repr(&key);
    default: return "<" + key.type_name() + ">";
  }
}

namespace {

// Pickle opcodes (CPython Lib/pickle.py names).
// clang-format off
enum Op : uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', NONE = 'N', BININT = 'J',
  BININT1 = 'K', BININT2 = 'M', BINFLOAT = 'G', BINSTRING = 'T', SHORT_BINSTRING = 'U',
  BINUNICODE = 'X', BINBYTES = 'B', SHORT_BINBYTES = 'C', APPEND = 'a', APPENDS = 'e',
  BUILD = 'b', GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}', EMPTY_LIST = ']', EMPTY_TUPLE = ')',
  LIST = 'l', TUPLE = 't', BINGET = 'h', LONG_BINGET = 'j', BINPUT = 'q', LONG_BINPUT = 'r',
  BINPERSID = 'Q', REDUCE = 'R', SETITEM = 's', SETITEMS = 'u',
  PROTO = 0x80, NEWOBJ = 0x81, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88,
  NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e, EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96,
};
// clang-format on

struct NamedType {
  const char* name;
  at::ScalarType type;
};

// clang-format off
// torch.<X>Storage classes named in persistent ids.
constexpr NamedType kStorageTypes[] = {
    {"FloatStorage", at::kFloat}, {"HalfStorage", at::kHalf}, {"BFloat16Storage", at::kBFloat16},
    {"DoubleStorage", at::kDouble}, {"LongStorage", at::kLong}, {"IntStorage", at::kInt},
    {"ShortStorage", at::kShort}, {"CharStorage", at::kChar}, {"ByteStorage", at::kByte},
    {"BoolStorage", at::kBool}, {"ComplexFloatStorage", at::kComplexFloat},
    {"ComplexDoubleStorage", at::kComplexDouble},
};

// torch.<dtype> globals (arguments of _rebuild_tensor_v3, used for the newer dtypes).
constexpr NamedType kDtypeGlobals[] = {
    {"float32", at::kFloat}, {"float", at::kFloat}, {"float64", at::kDouble},
    {"double", at::kDouble}, {"float16", at::kHalf}, {"half", at::kHalf},
    {"bfloat16", at::kBFloat16}, {"int64", at::kLong}, {"long", at::kLong}, {"int32", at::kInt},
    {"int", at::kInt}, {"int16", at::kShort}, {"short", at::kShort}, {"int8", at::kChar},
    {"uint8", at::kByte}, {"bool", at::kBool}, {"uint16", at::kUInt16}, {"uint32", at::kUInt32},
    {"uint64", at::kUInt64}, {"float8_e4m3fn", at::kFloat8_e4m3fn},
    {"float8_e5m2", at::kFloat8_e5m2}, {"float8_e4m3fnuz", at::kFloat8_e4m3fnuz},
    {"float8_e5m2fnuz", at::kFloat8_e5m2fnuz}, {"complex64", at::kComplexFloat},
    {"complex128", at::kComplexDouble},
};
// clang-format on

template <size_t N>
std::optional<at::ScalarType> lookup(const NamedType (&table)[N], const std::string& name) {
  for (const auto& t : table)
    if (name == t.name) return t.type;
  return std::nullopt;
}

std::optional<at::ScalarType> storage_dtype(const std::string& cls) {
  for (const char* prefix : {"torch.cuda.", "torch."}) {
    size_t n = std::strlen(prefix);
    if (cls.compare(0, n, prefix) == 0) return lookup(kStorageTypes, cls.substr(n));
  }
  return std::nullopt;
}

bool is_untyped_storage(const std::string& cls) {
  return cls == "torch.storage.UntypedStorage" || cls == "torch.UntypedStorage" ||
         cls == "torch.storage._UntypedStorage";
}

/// `flat` (a 1-D contiguous tensor over a whole storage) reinterpreted as `type`, sharing memory.
at::Tensor typed_view(const at::Tensor& flat, at::ScalarType type) {
  if (flat.scalar_type() == type) return flat;
  at::Tensor bytes = flat.scalar_type() == at::kByte ? flat : flat.view(at::kByte);
  int64_t elem = static_cast<int64_t>(c10::elementSize(type));
  return bytes.narrow(0, 0, bytes.numel() / elem * elem).view(type);
}

// Latin-1 text stored as UTF-8 (Python 2 str) to bytes; nullopt when a code point exceeds 255.
std::optional<std::string> utf8_to_latin1(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if ((c & 0xe0) == 0xc0 && c <= 0xc3 && i + 1 < s.size() &&
               (static_cast<unsigned char>(s[i + 1]) & 0xc0) == 0x80) {
      out += static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(s[++i]) & 0x3f));
    } else {
      return std::nullopt;
    }
  }
  return out;
}

std::string latin1_to_utf8(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

/// Reads the zip records of a torch.save file, turning LibTorch errors into DataError.
class Archive {
 public:
  Archive(const std::string& path, const std::string& what) : what_(what) {
    std::error_code ec;
    file_size_ = std::filesystem::file_size(path, ec);
    if (ec) raise<DataError>(what_, ": cannot read: ", ec.message());
    prefix_ = first_record_dir(path);
    guard("cannot open the zip archive",
          [&] { reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path); });
  }

  bool has(const std::string& name) {
    bool found = false;
    guard("cannot read the zip directory", [&] { found = reader_->hasRecord(name); });
    return found;
  }

  /// Record `name` as a 1-D uint8 tensor.
  at::Tensor read(const std::string& name) {
    if (!has(name))
      raise<DataError>(what_, ": truncated zip (record '", prefix_, name, "' missing)");
    size_t size = 0;
    guard("cannot read record '" + prefix_ + name + "'",
          [&] { size = reader_->getRecordSize(name); });
    // torch.save stores records uncompressed: a record can never exceed the file.
    if (size > file_size_)
      raise<DataError>(what_, ": record '", prefix_, name, "' claims ", size,
                       " bytes, more than the file holds");
    at::Tensor bytes = at::empty({static_cast<int64_t>(size)}, at::kByte);
    if (size > 0)
      guard("cannot read record '" + prefix_ + name + "'",
            [&] { reader_->getRecord(name, bytes.data_ptr(), size); });
    return bytes;
  }

  std::string read_string(const std::string& name) {
    at::Tensor t = read(name);
    return std::string(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()));
  }

  uint64_t file_size() const { return file_size_; }
  const std::string& prefix() const { return prefix_; }

 private:
  template <class F>
  void guard(const std::string& doing, F&& f) {
    try {
      f();
    } catch (const Error&) {
      throw;
    } catch (const c10::Error& e) {
      std::string msg = e.what_without_backtrace();
      raise<DataError>(what_, ": ", doing, ": ", msg.substr(0, msg.find('\n')));
    } catch (const std::exception& e) {
      std::string msg = e.what();
      raise<DataError>(what_, ": ", doing, ": ", msg.substr(0, msg.find('\n')));
    }
  }

  // The archive folder ("archive/", "model/", ...) for messages: the directory of the first
  // record, as LibTorch determines it. Read from the first local header; "" when unreadable.
  static std::string first_record_dir(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    unsigned char h[30];
    if (!in.read(reinterpret_cast<char*>(h), sizeof h) || std::memcmp(h, "PK\x03\x04", 4) != 0)
      return "";
    size_t n = h[26] | (h[27] << 8);
    std::string name(n, '\0');
    if (!in.read(name.data(), static_cast<std::streamsize>(n))) return "";
    size_t slash = name.find('/');
    return slash == std::string::npos ? "" : name.substr(0, slash + 1);
  }

  std::string what_;
  uint64_t file_size_ = 0;
  std::string prefix_;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader_;
};

/// Runs a pickle program, building values in a PickleTree. Never imports or calls anything.
class Unpickler {
 public:
  Unpickler(const std::string& data, std::string what, PickleTree& tree, Archive* archive)
      : begin_(reinterpret_cast<const unsigned char*>(data.data())),
        p_(begin_),
        end_(begin_ + data.size()),
        what_(std::move(what)),
        tree_(tree),
        archive_(archive),
        budget_(16 * data.size() + (1u << 20)) {}

  const PickleValue* run() {
    while (true) {
      op_pos_ = static_cast<size_t>(p_ - begin_);
      if (p_ == end_) fail("truncated pickle (no STOP opcode)");
      uint8_t op = *p_++;
      switch (op) {
        case PROTO: {
          uint8_t proto = u8();
          if (proto > 5) fail(str_cat("unsupported pickle protocol ", int(proto)));
          break;
        }
        case FRAME: take(8); break;  // frames only group opcodes for buffering
        case STOP: return pop();
        case MARK: marks_.push_back(stack_.size()); break;
        case POP:
          if (stack_.size() > floor())
            stack_.pop_back();
          else
            pop_mark();
          break;
        case POP_MARK: pop_mark(); break;
        case DUP: push(top()); break;

        case NONE: push(make(Kind::kNone)); break;
        case NEWTRUE:
        case NEWFALSE: {
          PickleValue* v = make(Kind::kBool);
          v->boolean = op == NEWTRUE;
          push(v);
          break;
        }
        case BININT: push_int(static_cast<int32_t>(uint_le(4))); break;
        case BININT1: push_int(u8()); break;
        case BININT2: push_int(static_cast<int64_t>(uint_le(2))); break;
        case LONG1: push_long(u8()); break;
        case LONG4: push_long(uint_le(4)); break;
        case BINFLOAT: {
          const unsigned char* b = take(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];  // big-endian
          PickleValue* v = make(Kind::kFloat);
          std::memcpy(&v->real, &bits, sizeof bits);
          push(v);
          break;
        }

        case SHORT_BINUNICODE: push_text(Kind::kString, u8()); break;
        case BINUNICODE: push_text(Kind::kString, uint_le(4)); break;
        case BINUNICODE8: push_text(Kind::kString, uint_le(8)); break;
        case SHORT_BINBYTES: push_text(Kind::kBytes, u8()); break;
        case BINBYTES: push_text(Kind::kBytes, uint_le(4)); break;
        case BINBYTES8:
        case BYTEARRAY8: push_text(Kind::kBytes, uint_le(8)); break;
        case SHORT_BINSTRING:
        case BINSTRING: {
          // Python 2 str: decoded as Latin-1 so the text is valid UTF-8.
          uint64_t n = op == SHORT_BINSTRING ? u8() : uint_le(4);
          if (op == BINSTRING && n > 0x7fffffff) fail("negative BINSTRING length");
          push_text(Kind::kString, n);
          stack_.back()->text = latin1_to_utf8(stack_.back()->text);
          break;
        }

        case EMPTY_DICT: push(make(Kind::kDict)); break;
        case EMPTY_LIST: push(make(Kind::kList)); break;
        case EMPTY_TUPLE: push(make(Kind::kTuple)); break;
        case EMPTY_SET: push(make(Kind::kSet)); break;
        case TUPLE1:
        case TUPLE2:
        case TUPLE3: {
          size_t n = op - TUPLE1 + 1;
          PickleValue* t = make(Kind::kTuple);
          t->items.resize(n);
          for (size_t i = n; i-- > 0;) t->items[i] = pop();
          push(t);
          break;
        }
        case TUPLE:
        case LIST:
        case FROZENSET: {
          PickleValue* t = make(op == TUPLE ? Kind::kTuple : op == LIST ? Kind::kList : Kind::kSet);
          auto items = pop_mark();
          t->items.assign(items.begin(), items.end());
          push(t);
          break;
        }
        case DICT: {
          PickleValue* d = make(Kind::kDict);
          set_items(d, pop_mark());
          push(d);
          break;
        }
        case APPEND: {
          PickleValue* v = pop();
          append(top(), {v});
          break;
        }
        case APPENDS:
        case ADDITEMS: {
          auto items = pop_mark();
          append(top(), items);
          break;
        }
        case SETITEM: {
          PickleValue* v = pop();
          PickleValue* k = pop();
          set_items(top(), {k, v});
          break;
        }
        case SETITEMS: {
          auto items = pop_mark();
          set_items(top(), items);
          break;
        }

        case BINPUT: memo_[u8()] = top(); break;
        case LONG_BINPUT: memo_[uint_le(4)] = top(); break;
        case MEMOIZE: memo_[memo_.size()] = top(); break;
        case BINGET: push(memo_get(u8())); break;
        case LONG_BINGET: push(memo_get(uint_le(4))); break;

        case GLOBAL: {
          std::string module = line();
          std::string name = line();
          push(global(module, name));
          break;
        }
        case STACK_GLOBAL: {
          PickleValue* name = pop();
          PickleValue* module = pop();
          if (name->kind != Kind::kString || module->kind != Kind::kString)
            fail("STACK_GLOBAL needs two strings");
          push(global(module->text, name->text));
          break;
        }
        case REDUCE: {
          PickleValue* args = pop();
          PickleValue* callable = pop();
          push(call(callable, args, 0));
          break;
        }
        case NEWOBJ: {
          PickleValue* args = pop();
          PickleValue* cls = pop();
          push(call(cls, args, 0));
          break;
        }
        case NEWOBJ_EX: {
          pop();  // keyword arguments: only recorded by Python classes we never run
          PickleValue* args = pop();
          PickleValue* cls = pop();
          push(call(cls, args, 0));
          break;
        }
        case BUILD: {
          PickleValue* state = pop();
          PickleValue* obj = top();
          // Objects keep their state; dicts (an OrderedDict's _metadata) and tensors ignore it.
          if (obj->kind == Kind::kObject) obj->state = state;
          break;
        }
        case BINPERSID: push(persistent_load(pop())); break;

        default:
          fail(str_cat("unsupported pickle opcode 0x", std::hex, std::setw(2), std::setfill('0'),
                       int(op)));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    raise<DataError>(what_, ": ", printable(msg), " (at byte ", op_pos_, ")");
  }

  // ---- input ----
  const unsigned char* take(uint64_t n) {
    if (n > static_cast<uint64_t>(end_ - p_)) fail("truncated pickle");
    const unsigned char* at = p_;
    p_ += n;
    return at;
  }
  uint8_t u8() { return *take(1); }
  uint64_t uint_le(int n) {
    const unsigned char* b = take(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  std::string line() {
    const unsigned char* nl = static_cast<const unsigned char*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl) fail("truncated pickle (GLOBAL without newline)");
    std::string s(reinterpret_cast<const char*>(p_), static_cast<size_t>(nl - p_));
    p_ = nl + 1;
    return s;
  }

  // ---- stack ----
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(PickleValue* v) { stack_.push_back(v); }
  PickleValue* pop() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValue* top() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    return stack_.back();
  }
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) fail("pickle MARK missing");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  PickleValue* memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail(str_cat("bad memo index ", index));
    return it->second;
  }
  PickleValue* make(Kind kind) { return tree_.make(kind); }

  // Copies that are not paid for by input bytes draw on a budget, so a small hostile pickle
  // cannot make quadratic work or memory.
  void charge(size_t n) {
    if (n > budget_) fail("pickle expands to too many values");
    budget_ -= n;
  }

  // ---- values ----
  void push_int(int64_t v) {
    PickleValue* n = make(Kind::kInt);
    n->integer = v;
    push(n);
  }
  void push_long(uint64_t nbytes) {
    const unsigned char* b = take(nbytes);
    // Two's complement little-endian; drop redundant sign bytes and see whether 64 bits hold it.
    bool negative = nbytes > 0 && (b[nbytes - 1] & 0x80);
    uint64_t used = nbytes;
    while (used > 8 && b[used - 1] == (negative ? 0xff : 0x00)) --used;
    bool fits = used <= 8 && !(used == 8 && nbytes > 8 && bool(b[7] & 0x80) != negative);
    if (!fits) {
      PickleValue* o = make(Kind::kObject);
      o->text = "builtins.int";
      PickleValue* raw = make(Kind::kBytes);
      raw->text.assign(reinterpret_cast<const char*>(b), nbytes);
      o->state = raw;
      push(o);
      return;
    }
    uint64_t v = negative ? ~uint64_t{0} : 0;
    for (uint64_t i = 0; i < std::min<uint64_t>(nbytes, 8); ++i) {
      v &= ~(uint64_t{0xff} << (8 * i));
      v |= uint64_t{b[i]} << (8 * i);
    }
    push_int(static_cast<int64_t>(v));
  }
  void push_text(Kind kind, uint64_t n) {
    const unsigned char* b = take(n);
    PickleValue* v = make(kind);
    v->text.assign(reinterpret_cast<const char*>(b), static_cast<size_t>(n));
    push(v);
  }

  void append(PickleValue* target, const std::vector<PickleValue*>& items) {
    if (target->kind != Kind::kList && target->kind != Kind::kSet && target->kind != Kind::kObject)
      fail("APPEND to a " + target->type_name());
    target->items.insert(target->items.end(), items.begin(), items.end());
  }
  void set_items(PickleValue* target, const std::vector<PickleValue*>& kv) {
    if (target->kind != Kind::kDict && target->kind != Kind::kObject)
      fail("SETITEM on a " + target->type_name());
    if (kv.size() % 2) fail("SETITEMS with an odd number of values");
    for (size_t i = 0; i < kv.size(); i += 2) target->entries.emplace_back(kv[i], kv[i + 1]);
  }

  PickleValue* global(std::string module, const std::string& name) {
    // Protocol 2 writes Python 2 module names (pickle's fix_imports mapping).
    if (module == "__builtin__") module = "builtins";
    if (module == "copy_reg") module = "copyreg";
    PickleValue* g = make(Kind::kObject);
    g->text = module + "." + name;
    return g;
  }

  /// `callable(*args)`: known constructors build plain values, anything else a placeholder.
  PickleValue* call(PickleValue* callable, PickleValue* args, int depth) {
    if (callable->kind != Kind::kObject) fail("REDUCE on a " + callable->type_name());
    if (!callable->args && args->kind == Kind::kTuple)
      if (PickleValue* v = call_known(callable->text, args->items, depth)) return v;
    PickleValue* obj = make(Kind::kObject);
    obj->text = callable->text;
    obj->args = args;
    return obj;
  }

  PickleValue* call_known(const std::string& fn, const std::vector<const PickleValue*>& a,
                          int depth) {
    auto kind_of = [&](size_t i) { return i < a.size() ? a[i]->kind : Kind::kNone; };
    if (fn == "collections.OrderedDict" || fn == "builtins.dict") {
      PickleValue* d = make(Kind::kDict);
      if (a.empty()) return d;
      if (a.size() != 1) return nullptr;
      if (a[0]->kind == Kind::kDict) {
        charge(a[0]->entries.size());
        d->entries = a[0]->entries;
        return d;
      }
      if (a[0]->kind != Kind::kList && a[0]->kind != Kind::kTuple) return nullptr;
      charge(a[0]->items.size());
      for (const PickleValue* kv : a[0]->items) {
        if (kv->kind != Kind::kTuple || kv->items.size() != 2) return nullptr;
        d->entries.emplace_back(kv->items[0], kv->items[1]);
      }
      return d;
    }
    if (fn == "builtins.set" || fn == "builtins.frozenset") {
      PickleValue* s = make(Kind::kSet);
      if (a.empty()) return s;
      Kind k = kind_of(0);
      if (a.size() != 1 || (k != Kind::kList && k != Kind::kTuple && k != Kind::kSet))
        return nullptr;
      charge(a[0]->items.size());
      s->items = a[0]->items;
      return s;
    }
    if (fn == "builtins.bytes" && a.empty()) return make(Kind::kBytes);
    if (fn == "_codecs.encode" && a.size() == 2 && kind_of(0) == Kind::kString &&
        kind_of(1) == Kind::kString && (a[1]->text == "latin1" || a[1]->text == "latin-1")) {
      auto raw = utf8_to_latin1(a[0]->text);
      if (!raw) return nullptr;
      PickleValue* b = make(Kind::kBytes);
      b->text = std::move(*raw);
      return b;
    }
    if (fn == "torch.Size" && a.size() == 1 &&
        (kind_of(0) == Kind::kTuple || kind_of(0) == Kind::kList)) {
      charge(a[0]->items.size());
      PickleValue* t = make(Kind::kTuple);
      t->items = a[0]->items;
      return t;
    }
    if (fn == "torch._utils._rebuild_tensor_v2" && a.size() >= 4)
      return rebuild_tensor(fn, a, std::nullopt);
    if (fn == "torch._utils._rebuild_tensor" && a.size() == 4)
      return rebuild_tensor(fn, a, std::nullopt);
    if (fn == "torch._utils._rebuild_tensor_v3" && a.size() >= 7) {
      std::optional<at::ScalarType> dtype;
      if (a[6]->kind == Kind::kObject && !a[6]->args && a[6]->text.compare(0, 6, "torch.") == 0)
        dtype = lookup(kDtypeGlobals, a[6]->text.substr(6));
      if (!dtype) return nullptr;
      return rebuild_tensor(fn, a, dtype);
    }
    if ((fn == "torch._utils._rebuild_parameter" ||
         fn == "torch._utils._rebuild_parameter_with_state") &&
        !a.empty() && a[0]->kind == Kind::kTensor)
      return const_cast<PickleValue*>(a[0]);  // a Parameter is its data
    if ((fn == "torch._tensor._rebuild_from_type_v2" || fn == "torch._tensor._rebuild_from_type") &&
        a.size() >= 3 && depth < 4) {
      // Tensor subclasses: (func, subclass, args, state) -> func(*args), the subclass dropped.
      auto* inner_fn = const_cast<PickleValue*>(a[0]);
      auto* inner_args = const_cast<PickleValue*>(a[2]);
      if (inner_fn->kind != Kind::kObject) return nullptr;
      PickleValue* v = call(inner_fn, inner_args, depth + 1);
      return v->kind == Kind::kTensor ? v : nullptr;
    }
    return nullptr;
  }

  /// _rebuild_tensor*(storage, storage_offset, size, stride, ...): a view of the storage.
  PickleValue* rebuild_tensor(const std::string& fn, const std::vector<const PickleValue*>& a,
                              std::optional<at::ScalarType> dtype) {
    if (a[0]->kind != Kind::kStorage) return nullptr;  // e.g. an unsupported storage type
    const at::Tensor& storage = a[0]->tensor;
    at::Tensor flat = typed_view(storage, dtype.value_or(storage.scalar_type()));
    auto ints = [&](const PickleValue* v, const char* what) {
      if (v->kind != Kind::kTuple && v->kind != Kind::kList)
        fail(str_cat(fn, ": ", what, " is a ", v->type_name(), ", not a tuple"));
      std::vector<int64_t> out;
      for (const PickleValue* x : v->items) {
        if (x->kind != Kind::kInt || x->integer < 0)
          fail(str_cat(fn, ": ", what, " must hold non-negative ints"));
        out.push_back(x->integer);
      }
      return out;
    };
    if (a[1]->kind != Kind::kInt || a[1]->integer < 0)
      fail(fn + ": storage offset must be a non-negative int");
    const int64_t offset = a[1]->integer;
    std::vector<int64_t> size = ints(a[2], "size");
    std::vector<int64_t> stride = ints(a[3], "stride");
    if (size.size() != stride.size()) fail(fn + ": size and stride differ in length");
    // Every element the view can reach must lie inside the storage.
    const int64_t n = flat.numel();
    bool empty = std::any_of(size.begin(), size.end(), [](int64_t s) { return s == 0; });
    int64_t last = offset;
    bool overflow = false;
    if (!empty)
      for (size_t i = 0; i < size.size(); ++i) {
        int64_t span = 0;
        overflow |= __builtin_mul_overflow(size[i] - 1, stride[i], &span);
        overflow |= __builtin_add_overflow(last, span, &last);
      }
    if (overflow || (empty ? offset > n : last >= n))
      fail(str_cat(fn, ": tensor of size ", c10::IntArrayRef(size), " stride ",
                   c10::IntArrayRef(stride), " offset ", offset, " exceeds its storage '",
                   printable(a[0]->text), "' of ", n, " elements"));
    PickleValue* t = make(Kind::kTensor);
    t->tensor = flat.as_strided(size, stride, offset);
    return t;
  }

  /// BINPERSID: ('storage', storage_class, key, location, numel) -> the storage record.
  PickleValue* persistent_load(PickleValue* pid) {
    if (!archive_) fail("persistent id in a pickle without an archive");
    const auto& f = pid->items;
    if (pid->kind != Kind::kTuple || f.size() < 5 || f[0]->kind != Kind::kString ||
        f[0]->text != "storage" || f[1]->kind != Kind::kObject || f[2]->kind != Kind::kString ||
        f[4]->kind != Kind::kInt || f[4]->integer < 0)
      fail("unsupported persistent id (expected ('storage', type, key, location, numel))");
    const std::string& cls = f[1]->text;
    const std::string& key = f[2]->text;
    std::optional<at::ScalarType> dtype =
        is_untyped_storage(cls) ? std::optional<at::ScalarType>(at::kByte) : storage_dtype(cls);
    if (!dtype) {
      // A storage type we cannot represent: a placeholder, so the rest of the file still loads.
      PickleValue* o = make(Kind::kObject);
      o->text = cls;
      o->args = pid;
      return o;
    }
    if (key.empty() || key.find('/') != std::string::npos || key.find("..") != std::string::npos)
      fail("bad storage key " + quoted(key));
    at::Tensor& bytes = storages_[key];
    if (!bytes.defined()) bytes = archive_->read("data/" + key);
    uint64_t need = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(f[4]->integer),
                               static_cast<uint64_t>(c10::elementSize(*dtype)), &need) ||
        need > static_cast<uint64_t>(bytes.numel()))
      fail(str_cat("storage ", quoted(key), " should hold ", f[4]->integer, " ", dtype_name(*dtype),
                   " elements but its record has ", bytes.numel(), " bytes"));
    PickleValue* s = make(Kind::kStorage);
    s->text = key;
    // Same record, same memory: tensors of one storage alias each other as in Python.
    s->tensor = typed_view(bytes.narrow(0, 0, static_cast<int64_t>(need)), *dtype);
    return s;
  }

  const unsigned char* begin_;
  const unsigned char* p_;
  const unsigned char* end_;
  size_t op_pos_ = 0;
  std::string what_;
  PickleTree& tree_;
  Archive* archive_;
  size_t budget_;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
  std::unordered_map<std::string, at::Tensor> storages_;
};

}  // namespace

std::shared_ptr<const PickleTree> pickle_loads(const std::string& data, const std::string& what) {
  auto tree = std::make_shared<PickleTree>();
  Unpickler u(data, what, *tree, nullptr);
  tree->set_root(u.run());
  return tree;
}

std::shared_ptr<const PickleTree> torch_load(const std::string& path) {
  const std::string what = "checkpoint '" + path + "'";
  Archive archive(path, what);
  if (archive.has("byteorder")) {
    std::string order = archive.read_string("byteorder");
    if (order == "big") raise<DataError>(what, ": big-endian checkpoints are unsupported");
    if (order != "little") raise<DataError>(what, ": bad byteorder record ", quoted(order));
  }
  if (!archive.has("data.pkl"))
    raise<DataError>(what, ": no '", archive.prefix(), "data.pkl' record (not a torch.save file)");
  std::string pkl = archive.read_string("data.pkl");
  auto tree = std::make_shared<PickleTree>();
  const std::string source = what + ": " + archive.prefix() + "data.pkl";
  Unpickler u(pkl, source, *tree, &archive);
  try {
    tree->set_root(u.run());
  } catch (const c10::Error& e) {
    // Views are validated before LibTorch sees them; this is a safety net, not a code path.
    std::string msg = e.what_without_backtrace();
    raise<DataError>(source, ": ", msg.substr(0, msg.find('\n')));
  }
  return tree;
}

}  // namespace evax
