// Reads `torch.save` zip files (torch >= 1.6: .pt/.pth/.ckpt) without Python. LibTorch's zip
// reader gives the records; our own tolerant unpickler turns `data.pkl` into a tree of plain
// values. Nothing is ever executed: classes we do not know (argparse.Namespace, numpy scalars,
// Lightning callbacks) become placeholder objects that only record their arguments and state.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace evax {

/// One unpickled value. Nodes belong to a PickleTree and point at each other: pickle memo
/// references share nodes, and a malformed file may even form cycles, so walks must be bounded.
struct PickleValue {
  // clang-format off
  enum class Kind {
    kNone, kBool, kInt, kFloat, kString, kBytes, kList, kTuple, kSet, kDict,
    kTensor,   ///< a tensor; views of one storage share memory as in Python
    kStorage,  ///< a raw storage (only seen directly when a file pickles one)
    kObject,   ///< anything else: a class/function reference or a never-executed instance
  };
  // clang-format on
  Kind kind = Kind::kNone;
  bool boolean = false;  ///< kBool
  int64_t integer = 0;   ///< kInt (ints beyond 64 bits become kObject "builtins.int")
  double real = 0;       ///< kFloat
  /// kString (as stored, normally UTF-8), kBytes, kObject: "module.name", kStorage: record key
  std::string text;
  /// kList, kTuple, kSet; kObject: items appended to it (list subclasses)
  std::vector<const PickleValue*> items;
  /// kDict in insertion order (keys may be any value); kObject: items set on it (dict subclasses)
  std::vector<std::pair<const PickleValue*, const PickleValue*>> entries;
  at::Tensor tensor;  ///< kTensor; kStorage: the whole storage as a flat 1-D tensor
  /// kObject: the argument tuple it was called with; null for a bare class/function reference
  const PickleValue* args = nullptr;
  const PickleValue* state = nullptr;  ///< kObject: the state given by BUILD (__setstate__)

  /// Whether this is a dict, or an object that holds dict items (a dict subclass).
  bool is_mapping() const {
    return kind == Kind::kDict || (kind == Kind::kObject && !entries.empty());
  }
  /// The value under string key `key` of a mapping, or nullptr.
  const PickleValue* get(const std::string& key) const;
  /// "dict", "int", "tensor", ... or an object's class name such as "argparse.Namespace".
  std::string type_name() const;
};

/// An unpickled object graph; owns its nodes and, through their tensors, the storages.
class PickleTree {
 public:
  /// The unpickled top-level value.
  const PickleValue& root() const { return *root_; }
  /// Number of nodes (a measure of the pickle's size).
  size_t size() const { return nodes_.size(); }

  /// A new node owned by this tree (used while unpickling).
  PickleValue* make(PickleValue::Kind kind) {
    nodes_.emplace_back().kind = kind;
    return &nodes_.back();
  }
  /// Sets the top-level value (used while unpickling).
  void set_root(const PickleValue* root) { root_ = root; }

 private:
  std::deque<PickleValue> nodes_;  // a deque: node addresses stay valid as it grows
  const PickleValue* root_ = nullptr;
};

/// Reads a torch.save zip file into CPU tensors. Storages shared by several tensors stay shared
/// (views alias one buffer). Throws DataError naming the file for anything malformed, for the
/// legacy non-zip format and for big-endian files.
std::shared_ptr<const PickleTree> torch_load(const std::string& path);

/// Unpickles an in-memory pickle (protocols 2-5) that holds no persistent ids (tensors). `what`
/// names the source in error messages.
std::shared_ptr<const PickleTree> pickle_loads(const std::string& data, const std::string& what);

/// One line for listings: "tensor float16 [64, 3, 7, 7]", "dict (12 entries)", "int 3",
/// "torch.device('cuda', 0)", "argparse.Namespace".
std::string pickle_describe(const PickleValue& value);

/// A dict key as a name component: strings as they are, ints in decimal, bools as True/False;
/// other keys as "<type>".
std::string pickle_key_text(const PickleValue& key);

/// Torch-style dtype name: "float32", "bfloat16", "int64", ...
std::string dtype_name(at::ScalarType type);

/// `text` made safe for a one-line message: control characters become \n, \t or \xNN.
std::string printable(const std::string& text);

}  // namespace evax
