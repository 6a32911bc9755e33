#include "evax/io/weight_file.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unordered_set>

#include "evax/core/error.h"
#include "evax/io/safetensors.h"

namespace evax {
namespace {

using Kind = PickleValue::Kind;

constexpr const char* kStateDictKeys[] = {"model", "module", "model_ema", "state_dict"};

/// Bounded walks over a pickle graph: memo sharing can make it exponentially larger than the
/// file, and a malformed file can make cycles.
class Walker {
 public:
  using Leaf = std::function<void(const std::string& name, const PickleValue& value)>;

  Walker(const std::string& path, bool mappings_only)
      : file_(path), mappings_only_(mappings_only) {}

  void walk(const PickleValue& v, const std::string& name, const Leaf& leaf, int depth = 0) {
    if (depth > kMaxDepth)
      raise<DataError>("checkpoint '", file_, "': values nested deeper than ", kMaxDepth,
                       " levels at '", printable(name), "'");
    if (++visits_ > kMaxVisits)
      raise<DataError>("checkpoint '", file_, "': structure too large to walk");
    auto child = [&](const std::string& key) { return name.empty() ? key : name + "." + key; };
    const bool container = v.is_mapping() || v.kind == Kind::kList || v.kind == Kind::kTuple ||
                           v.kind == Kind::kObject;
    if (container) {
      // A container inside itself (possible in pickles) is walked once.
      if (std::find(open_.begin(), open_.end(), &v) != open_.end()) return;
      open_.push_back(&v);
    }
    walk_children(v, name, child, leaf, depth);
    if (container) open_.pop_back();
  }

 private:
  template <class Child>
  void walk_children(const PickleValue& v, const std::string& name, const Child& child,
                     const Leaf& leaf, int depth) {
    if (v.is_mapping()) {
      for (const auto& [k, x] : v.entries) walk(*x, child(pickle_key_text(*k)), leaf, depth + 1);
      if (v.kind == Kind::kDict || mappings_only_) return;
    } else if (mappings_only_) {
      leaf(name, v);
      return;
    }
    switch (v.kind) {
      case Kind::kList:
      case Kind::kTuple:
        for (size_t i = 0; i < v.items.size(); ++i)
          walk(*v.items[i], child(std::to_string(i)), leaf, depth + 1);
        break;
      case Kind::kObject:
        for (size_t i = 0; i < v.items.size(); ++i)
          walk(*v.items[i], child(std::to_string(i)), leaf, depth + 1);
        if (v.state) walk(*v.state, name, leaf, depth + 1);
        break;
      default: leaf(name, v);
    }
  }

  static constexpr int kMaxDepth = 64;
  static constexpr size_t kMaxVisits = size_t{1} << 22;
  const std::string& file_;
  bool mappings_only_;
  size_t visits_ = 0;
  std::vector<const PickleValue*> open_;  // containers being walked, outermost first
};

std::string describe(const std::string& path, const PickleValue& v) {
  std::string d = pickle_describe(v);
  bool container = v.is_mapping() || v.kind == Kind::kList || v.kind == Kind::kTuple ||
                   (v.kind == Kind::kObject && v.state);
  if (!container) return d;
  size_t n = 0;
  Walker(path, false).walk(v, "", [&](const std::string&, const PickleValue& x) {
    n += x.kind == Kind::kTensor;
  });
  if (n == 0) return d;
  std::string count = str_cat(n, n == 1 ? " tensor" : " tensors");
  if (!d.empty() && d.back() == ')') return d.substr(0, d.size() - 1) + ", " + count + ")";
  return d + " (" + count + ")";
}

/// The attributes of a pickled nn.Module (`torch.save(model)`), or nullptr for anything else.
const PickleValue* module_state(const PickleValue& v) {
  if (v.kind != Kind::kObject || !v.state || !v.state->is_mapping()) return nullptr;
  const PickleValue* s = v.state;
  return s->get("_parameters") && s->get("_modules") ? s : nullptr;
}

/// What `module.state_dict()` would return: per module its parameters, then its persistent
/// buffers, then its children.
void module_tensors(const std::string& path, const PickleValue& module, const std::string& prefix,
                    TensorMap& out, int depth = 0) {
  if (depth > 64) raise<DataError>("checkpoint '", path, "': modules nested too deeply");
  const PickleValue* s = module_state(module);
  std::unordered_set<std::string> non_persistent;
  if (const PickleValue* np = s->get("_non_persistent_buffers_set"))
    for (const PickleValue* name : np->items) non_persistent.insert(pickle_key_text(*name));
  for (const char* group : {"_parameters", "_buffers"}) {
    const PickleValue* g = s->get(group);
    if (!g || !g->is_mapping()) continue;
    for (const auto& [k, x] : g->entries) {
      const std::string name = pickle_key_text(*k);
      if (x->kind != Kind::kTensor || (group[1] == 'b' && non_persistent.count(name))) continue;
      out.emplace_back(prefix + name, x->tensor);
    }
  }
  const PickleValue* children = s->get("_modules");
  if (!children->is_mapping()) return;
  for (const auto& [k, x] : children->entries)
    if (module_state(*x))
      module_tensors(path, *x, prefix + pickle_key_text(*k) + ".", out, depth + 1);
}

enum class Format { kTorchZip, kSafetensors };

Format detect(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    raise<DataError>("checkpoint '", path, "' is a directory: give a weight file (.pt, .pth, "
                     ".ckpt, .safetensors), e.g. a run's <run>/checkpoints/best/model.safetensors");
  std::ifstream in(path, std::ios::binary);
  if (!in) raise<DataError>("cannot open checkpoint '", path, "': ", std::strerror(errno));
  unsigned char head[9] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto n = static_cast<size_t>(in.gcount());
  if (n == 0) raise<DataError>("checkpoint '", path, "': empty file");
  // safetensors: u64 header length, then the JSON header's '{' (never a zip compression method).
  if (n == 9 && head[8] == '{') return Format::kSafetensors;
  if (n >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return Format::kTorchZip;
  if (head[0] == 0x80)
    raise<DataError>("checkpoint '", path,
                     "': legacy (pre-1.6) torch.save format is not supported; re-save with "
                     "torch>=1.6");
  raise<DataError>("checkpoint '", path,
                   "': unrecognized format (neither a torch.save zip file nor safetensors)");
}

}  // namespace

WeightFileContents weight_file_read(const std::string& path) {
  WeightFileContents c;
  c.path = path;
  if (detect(path) == Format::kSafetensors) {
    c.format = "safetensors";
    c.tensors = safetensors_load(path, &c.metadata);
    for (const auto& [name, t] : c.tensors) {
      PickleValue v;
      v.kind = Kind::kTensor;
      v.tensor = t;
      c.entries.push_back({name, pickle_describe(v)});
    }
    return c;
  }

  c.format = "torch-zip";
  c.pickle = torch_load(path);
  const PickleValue& root = c.pickle->root();
  if (root.is_mapping()) {
    for (const auto& [k, v] : root.entries)
      c.entries.push_back({pickle_key_text(*k), describe(path, *v)});
  } else if (root.kind == Kind::kList || root.kind == Kind::kTuple) {
    for (size_t i = 0; i < root.items.size(); ++i)
      c.entries.push_back({std::to_string(i), describe(path, *root.items[i])});
  } else {
    c.entries.push_back({"", describe(path, root)});
  }
  std::unordered_set<std::string> seen;
  Walker(path, false).walk(root, "", [&](const std::string& name, const PickleValue& v) {
    if (v.kind == Kind::kTensor && seen.insert(name).second) c.tensors.emplace_back(name, v.tensor);
  });
  return c;
}

TensorMap weight_file_state_dict(const WeightFileContents& contents, std::string* chosen_key,
                                 int64_t* skipped) {
  if (chosen_key) chosen_key->clear();
  if (skipped) *skipped = 0;
  if (!contents.pickle) return contents.tensors;  // safetensors: the file is the state dict

  // A dict is flattened; a pickled nn.Module gives what its state_dict() would.
  auto flatten = [&](const PickleValue& v, int64_t* other) {
    TensorMap out;
    *other = 0;
    if (module_state(v)) {
      module_tensors(contents.path, v, "", out);
    } else if (v.is_mapping()) {
      Walker(contents.path, true).walk(v, "", [&](const std::string& name, const PickleValue& x) {
        if (x.kind == Kind::kTensor)
          out.emplace_back(name, x.tensor);
        else
          ++*other;
      });
    }
    std::unordered_set<std::string> seen;
    for (const auto& [name, t] : out)
      if (!seen.insert(name).second)
        raise<DataError>("checkpoint '", contents.path, "': tensor name '", printable(name),
                         "' occurs twice in the state dict");
    return out;
  };

  const PickleValue& root = contents.pickle->root();
  int64_t other = 0;
  for (const char* key : kStateDictKeys) {
    const PickleValue* v = root.get(key);
    if (!v) continue;
    TensorMap out = flatten(*v, &other);
    if (out.empty()) continue;
    if (chosen_key) *chosen_key = key;
    if (skipped) *skipped = other;
    return out;
  }
  TensorMap out = flatten(root, &other);
  if (!out.empty()) {
    if (skipped) *skipped = other;
    return out;
  }
  std::string keys;
  for (size_t i = 0; i < contents.entries.size() && i < 12; ++i)
    keys += (i ? ", " : "") + printable(contents.entries[i].key);
  if (contents.entries.size() > 12) keys += ", ...";
  raise<DataError>("checkpoint '", contents.path, "': no state dict found (top level: ",
                   root.is_mapping() ? "{" + keys + "}" : pickle_describe(root), ")");
}

TensorMap tensors_to(const TensorMap& tensors, at::ScalarType type) {
  TensorMap out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors)
    out.emplace_back(name, t.is_floating_point() ? t.to(type) : t);
  return out;
}

}  // namespace evax
