#include "evax/core/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace fs = std::filesystem;

namespace evax {
namespace {

YAML::Node child(const YAML::Node& map, const std::string& key) {
  if (!map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  for (const auto& kv : map)
    if (kv.first.Scalar() == key) return kv.second;
  return YAML::Node(YAML::NodeType::Undefined);
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : path) {
    if (c == '.') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string parent_of(const std::string& path) {
  auto p = path.rfind('.');
  return p == std::string::npos ? std::string() : path.substr(0, p);
}

// Deep merge: maps merge key by key (base order first), anything else is replaced by `over`.
YAML::Node merged(const YAML::Node& base, const YAML::Node& over) {
  if (!base.IsMap() || !over.IsMap()) return YAML::Clone(over);
  YAML::Node out(YAML::NodeType::Map);
  for (const auto& kv : base) {
    const std::string key = kv.first.Scalar();
    YAML::Node o = child(over, key);
    out[key] = o.IsDefined() ? merged(kv.second, o) : YAML::Clone(kv.second);
  }
  for (const auto& kv : over) {
    const std::string key = kv.first.Scalar();
    if (!child(base, key).IsDefined()) out[key] = YAML::Clone(kv.second);
  }
  return out;
}

void record_origins(const YAML::Node& n, const std::string& prefix, const std::string& file,
                    std::map<std::string, std::string>* origins) {
  if (!n.IsMap()) return;
  for (const auto& kv : n) {
    const std::string path = join(prefix, kv.first.Scalar());
    (*origins)[path] = file + ":" + std::to_string(kv.first.Mark().line + 1);
    record_origins(kv.second, path, file, origins);
  }
}

// yaml-cpp keeps every entry of a key repeated in one map (lookups then see one of them, silently):
// a repeated key is an error naming both lines.
void reject_duplicates(const YAML::Node& n, const std::string& prefix, const std::string& file) {
  if (n.IsMap()) {
    std::map<std::string, YAML::Mark> seen;
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) continue;
      const std::string path = join(prefix, kv.first.Scalar());
      const YAML::Mark m = kv.first.Mark();
      auto [it, fresh] = seen.emplace(kv.first.Scalar(), m);
      if (!fresh) {
        const YAML::Mark& f = it->second;
        const std::string where =
            f.line == m.line ? str_cat("line ", m.line + 1, ", columns ", f.column + 1, " and ",
                                       m.column + 1)
                             : str_cat("lines ", f.line + 1, " and ", m.line + 1);
        raise<ConfigError>(file, ":", m.line + 1, ": duplicate key `", path, "` (", where,
                           "); a key may appear once per map");
      }
      reject_duplicates(kv.second, path, file);
    }
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i)
      reject_duplicates(n[i], prefix + "[" + std::to_string(i) + "]", file);
  }
}

std::string render(const YAML::Node& n) {
  if (!n.IsDefined()) return "<absent>";
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Loads files recursively, tracking the include chain to report cycles.
class ConfigLoader {
 public:
  static void load(const fs::path& file, std::vector<std::string>* chain, YAML::Node* tree,
                   std::map<std::string, std::string>* origins) {
    const std::string shown = file.lexically_normal().string();
    std::ifstream in(file);
    if (!in) {
      std::string via = chain->empty() ? "" : " (included from " + chain->back() + ")";
      raise<ConfigError>("cannot read config file '", shown, "'", via);
    }
    std::stringstream ss;
    ss << in.rdbuf();
    parse_into(ss.str(), shown, file.parent_path(), chain, tree, origins);
  }

  static void parse_into(const std::string& text, const std::string& shown, const fs::path& dir,
                         std::vector<std::string>* chain, YAML::Node* tree,
                         std::map<std::string, std::string>* origins) {
    const std::string canon = fs::weakly_canonical(fs::absolute(shown)).string();
    if (std::find(chain->begin(), chain->end(), canon) != chain->end())
      raise<ConfigError>("config '", shown, "': `_base_` cycle through ", chain->back());
    if (chain->size() > 32) raise<ConfigError>("config '", shown, "': `_base_` nesting too deep");
    YAML::Node own;
    try {
      own.reset(YAML::Load(text));
    } catch (const YAML::Exception& e) {
      raise<ConfigError>(shown, ":", e.mark.line + 1, ":", e.mark.column + 1,
                         ": YAML syntax error: ", e.msg);
    }
    if (own.IsNull() || !own.IsDefined()) own.reset(YAML::Node(YAML::NodeType::Map));
    if (!own.IsMap()) raise<ConfigError>(shown, ": the top level of a config must be a map");
    reject_duplicates(own, "", shown);

    chain->push_back(canon);
    YAML::Node acc(YAML::NodeType::Map);
    YAML::Node bases = child(own, "_base_");
    if (bases.IsDefined()) {
      std::vector<std::string> files;
      if (bases.IsScalar()) {
        files.push_back(bases.Scalar());
      } else if (bases.IsSequence()) {
        for (const auto& b : bases) {
          if (!b.IsScalar())
            raise<ConfigError>(shown, ":", b.Mark().line + 1, ": `_base_` entries must be file names");
          files.push_back(b.Scalar());
        }
      } else {
        raise<ConfigError>(shown, ":", bases.Mark().line + 1,
                           ": `_base_` must be a file name or a list of file names");
      }
      for (const auto& f : files) {
        YAML::Node base_tree(YAML::NodeType::Map);
        fs::path p = fs::path(f).is_absolute() ? fs::path(f) : dir / f;
        load(p, chain, &base_tree, origins);
        acc.reset(merged(acc, base_tree));
      }
      own.remove("_base_");
    }
    chain->pop_back();
    record_origins(own, "", shown, origins);
    tree->reset(merged(acc, own));
  }
};

Config::Config() : root_(YAML::NodeType::Map) {}

Config Config::load(const std::string& path) {
  Config c;
  std::vector<std::string> chain;
  ConfigLoader::load(fs::path(path), &chain, &c.root_, &c.origins_);
  c.name_ = fs::path(path).stem().string();
  return c;
}

Config Config::parse(const std::string& text, const std::string& origin,
                     const std::string& base_dir) {
  Config c;
  std::vector<std::string> chain;
  ConfigLoader::parse_into(text, origin, fs::path(base_dir), &chain, &c.root_, &c.origins_);
  return c;
}

void Config::apply_override(const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    raise<UsageError>("--set expects KEY=VALUE (for example optimizer.lr=1e-3), got '", assignment,
                      "'");
  const std::string path = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  for (const auto& part : split_path(path))
    if (part.empty()) raise<UsageError>("--set: malformed key '", path, "'");
  YAML::Node value;
  try {
    value.reset(YAML::Load(text));
  } catch (const YAML::Exception&) {
    value.reset(YAML::Node(text));  // not valid YAML: keep the raw string
  }
  if (!value.IsDefined() || (value.IsNull() && !text.empty() && text != "null" && text != "~"))
    value.reset(YAML::Node(text));
  // Build {a: {b: {c: value}}} and merge it on top.
  auto parts = split_path(path);
  YAML::Node patch = value;
  for (size_t i = parts.size(); i-- > 0;) {
    YAML::Node m(YAML::NodeType::Map);
    m[parts[i]] = patch;
    patch.reset(m);  // rebind; operator= would write through the shared node
  }
  root_.reset(merged(root_, patch));
  std::string prefix;
  for (const auto& part : parts) {
    prefix = join(prefix, part);
    if (!origins_.count(prefix) || prefix == path) origins_[prefix] = "--set " + assignment;
  }
}

YAML::Node Config::find(const std::string& path) const {
  YAML::Node cur = root_;
  for (const auto& part : split_path(path)) {
    cur.reset(child(cur, part));
    if (!cur.IsDefined()) return cur;
  }
  return cur;
}

void Config::note_known(const std::string& path) {
  std::string p = path;
  while (!p.empty()) {
    known_.insert(p);
    p = parent_of(p);
  }
}

bool Config::has(const std::string& path) {
  note_known(path);
  if (record_) record(path, "", "", false, nullptr);
  YAML::Node n = find(path);
  return n.IsDefined() && !n.IsNull();
}

void Config::mark_known(const std::string& path, const char* doc) {
  note_known(path);
  free_.insert(path);
  if (record_) {
    record(path, "map", "", false, doc);
    (*record_)[path].free_form = true;
  }
}

void Config::record(const std::string& path, std::string type, std::string dflt, bool required,
                    const char* doc) const {
  ConfigKey& k = (*record_)[path];
  k.path = path;
  if (!type.empty()) k.type = std::move(type);
  if (!required && !dflt.empty() &&
      std::find(k.defaults.begin(), k.defaults.end(), dflt) == k.defaults.end())
    k.defaults.push_back(std::move(dflt));
  k.required = k.required || required;
  if (doc && *doc && k.doc.empty()) k.doc = doc;
}

std::string Config::origin(const std::string& path) const {
  std::string p = path;
  while (!p.empty()) {
    auto it = origins_.find(p);
    if (it != origins_.end()) return it->second;
    p = parent_of(p);
  }
  return name_.empty() ? "config" : name_;
}

void Config::type_error(const std::string& path, const YAML::Node& n,
                        const std::string& expected) const {
  raise<ConfigError>(origin(path), ": `", path, "`: expected ", expected, ", got '", render(n), "'");
}

void Config::fail(const ConfigError& e) const {
  if (!probe_) throw e;
}

void Config::require_failed(const std::string& path, bool empty) const {
  if (empty)
    fail(ConfigError(str_cat(origin(path), ": `", path,
                             "` is empty: it is required, give it a value")));
  else
    fail(ConfigError(str_cat("config", name_.empty() ? "" : " '" + name_ + "'",
                             ": missing required key `", path, "`")));
}

void Config::check(const std::string& path, bool ok, const std::string& what) const {
  if (record_) {
    ConfigKey& k = (*record_)[path];
    k.path = path;
    if (std::find(k.rules.begin(), k.rules.end(), what) == k.rules.end()) k.rules.push_back(what);
  }
  if (ok) return;
  fail(ConfigError(str_cat(origin(path), ": `", path, "` = ", render(find(path)), ": ", what)));
}

void Config::reject_unknown() const {
  // Depth-first so the first offending key in file order is reported.
  std::vector<std::pair<YAML::Node, std::string>> stack{{root_, ""}};
  while (!stack.empty()) {
    auto [node, prefix] = stack.back();
    stack.pop_back();
    std::vector<std::pair<YAML::Node, std::string>> children;
    for (const auto& kv : node) {
      const std::string path = join(prefix, kv.first.Scalar());
      if (free_.count(path)) continue;
      if (!known_.count(path)) {
        std::string best;
        size_t best_d = std::numeric_limits<size_t>::max();
        std::vector<std::string> valid;
        for (const auto& k : known_) {
          if (parent_of(k) != prefix) continue;
          const std::string leaf = prefix.empty() ? k : k.substr(prefix.size() + 1);
          valid.push_back(leaf);
          size_t d = edit_distance(kv.first.Scalar(), leaf);
          if (d < best_d) best_d = d, best = k;
        }
        std::string hint;
        if (!best.empty() && best_d <= std::max<size_t>(2, kv.first.Scalar().size() / 3)) {
          hint = " (did you mean `" + best + "`?)";
        } else if (!valid.empty()) {
          hint = " (valid keys here:";
          for (const auto& v : valid) hint += " " + v;
          hint += ")";
        }
        raise<ConfigError>(origin(path), ": unknown key `", path, "`", hint);
      }
      if (kv.second.IsMap()) children.emplace_back(kv.second, path);
    }
    for (auto it = children.rbegin(); it != children.rend(); ++it) stack.push_back(*it);
  }
}

std::string Config::dump() const {
  YAML::Emitter e;
  e << root_;
  return std::string(e.c_str()) + "\n";
}

// --- ConfigView ----------------------------------------------------------------------------------

bool ConfigView::has(const std::string& key) const { return cfg_->has(path(key)); }
void ConfigView::mark_known(const std::string& key, const char* doc) const {
  cfg_->mark_known(path(key), doc);
}
ConfigView ConfigView::at(const std::string& key) const { return ConfigView(cfg_, path(key)); }
void ConfigView::check(const std::string& key, bool ok, const std::string& what) const {
  cfg_->check(path(key), ok, what);
}

// --- scalar decoding -----------------------------------------------------------------------------

namespace config_detail {

bool decode_scalar(const YAML::Node& n, bool* out) {
  if (!n.IsScalar()) return false;
  try {
    *out = n.as<bool>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}

// Decimal only: "010" is ten (YAML 1.2), "0x10", " 5", "1e3" and "5 " are not integers.
bool decode_scalar(const YAML::Node& n, int64_t* out) {
  if (!n.IsScalar()) return false;
  const std::string& s = n.Scalar();
  const size_t digits = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (s.size() <= digits || !std::isdigit(static_cast<unsigned char>(s[digits]))) return false;
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used, 10);
    if (used != s.size()) return false;
    *out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool decode_scalar(const YAML::Node& n, int* out) {
  int64_t v = 0;
  if (!decode_scalar(n, &v) || v < std::numeric_limits<int>::min() ||
      v > std::numeric_limits<int>::max())
    return false;
  *out = static_cast<int>(v);
  return true;
}

bool decode_scalar(const YAML::Node& n, double* out) {
  if (!n.IsScalar()) return false;
  const std::string& s = n.Scalar();
  // No leading blanks, no hexadecimal ("0x1p3"): decimal numbers, inf and nan only.
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0])) ||
      s.find_first_of("xX") != std::string::npos)
    return false;
  try {
    size_t used = 0;
    double v = std::stod(s, &used);
    if (used != s.size()) return false;
    *out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool decode_scalar(const YAML::Node& n, std::string* out) {
  if (!n.IsScalar()) return false;
  *out = n.Scalar();
  return true;
}

const char* type_name(bool*) { return "a boolean (true/false)"; }
const char* type_name(int*) { return "an integer"; }
const char* type_name(int64_t*) { return "an integer"; }
const char* type_name(double*) { return "a number"; }
const char* type_name(std::string*) { return "a string"; }
const char* short_type_name(bool*) { return "bool"; }
const char* short_type_name(int*) { return "int"; }
const char* short_type_name(int64_t*) { return "int"; }
const char* short_type_name(double*) { return "float"; }
const char* short_type_name(std::string*) { return "string"; }
std::string yaml_text(bool v) { return v ? "true" : "false"; }
std::string yaml_text(int v) { return std::to_string(v); }
std::string yaml_text(int64_t v) { return std::to_string(v); }
std::string yaml_text(double v) {
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  if (std::isnan(v)) return ".nan";
  // The shortest text that reads back as the same double; integral values keep a ".0".
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  // Plain decimals for everyday magnitudes (300.0, not 3e+02).
  if (s.find('e') != std::string::npos && std::fabs(v) >= 1e-4 && std::fabs(v) < 1e15) {
    for (int dec = 0; dec <= 20; ++dec) {
      std::snprintf(buf, sizeof buf, "%.*f", dec, v);
      if (std::strtod(buf, nullptr) == v) break;
    }
    s = buf;
  }
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}
std::string yaml_text(const std::string& v) {
  if (v.empty()) return "\"\"";
  // Plain when YAML would read it back as this same string.
  YAML::Node n;
  try {
    n = YAML::Load(v);
  } catch (const YAML::Exception&) {
    n = YAML::Node();
  }
  if (n.IsScalar() && n.Scalar() == v && n.Tag() != "!" ) {
    bool bool_or_num = false;
    bool b;
    double d;
    if (YAML::convert<bool>::decode(n, b) || YAML::convert<double>::decode(n, d)) bool_or_num = true;
    if (!bool_or_num && v != "~" && v != "null") return v;
  }
  YAML::Emitter e;
  e << YAML::DoubleQuoted << v;
  return e.c_str();
}

}  // namespace config_detail
}  // namespace evax
