// YAML configs: `_base_` inheritance, `--set a.b=v` overrides, typed decoding with errors that name
// the file, line and YAML path, and rejection of keys no decoder asked for.
//
// Example:
//   Config cfg = Config::load("configs/pretrain/demo.yaml");
//   cfg.apply_override("optimizer.lr=1e-3");
//   double lr = cfg.get<double>("optimizer.lr", 1.5e-3);
//   cfg.check("optimizer.lr", lr > 0, "must be > 0");
//   cfg.reject_unknown();  // after every decoder ran
//
// Commands decode through decode_all, which reports unknown keys before any value error:
//   Plan plan = cfg.decode_all([](Config& c) { return plan_from_config(c); });
//
// Every read may carry a one-line description; record_keys runs a decoder as a probe and collects
// each key's type, default, rules and description (`evax config --reference` prints them).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "evax/core/error.h"

namespace evax {

class Config;

/// One key a decoder reads, as a recording probe saw it (Config::record_keys).
struct ConfigKey {
  std::string path;                   ///< dotted YAML path
  std::string type;                   ///< bool, int, float, string, list of ..., map ("" = presence)
  std::vector<std::string> defaults;  ///< the fallback as YAML text, each distinct one seen
  bool required = false;              ///< read with require(): no default
  bool free_form = false;             ///< a section whose keys are not checked (mark_known)
  std::vector<std::string> rules;     ///< what check() demands of the value
  std::string doc;                    ///< the decoder's one-line description
};
/// Recorded keys by path (sorted).
using ConfigKeys = std::map<std::string, ConfigKey>;

/// A view of one map of a Config at a dotted prefix; keys are relative to it.
class ConfigView {
 public:
  ConfigView(Config* cfg, std::string prefix) : cfg_(cfg), prefix_(std::move(prefix)) {}
  template <class T>
  T get(const std::string& key, const T& fallback, const char* doc = nullptr) const;
  template <class T>
  T require(const std::string& key, const char* doc = nullptr) const;
  bool has(const std::string& key) const;
  void mark_known(const std::string& key, const char* doc = nullptr) const;
  ConfigView at(const std::string& key) const;
  void check(const std::string& key, bool ok, const std::string& what) const;
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

 private:
  Config* cfg_;
  std::string prefix_;
};

/// A fully resolved configuration tree plus where each value came from.
class Config {
 public:
  Config();
  /// Loads a YAML file, resolving `_base_` (a file or list of files, relative to the including file,
  /// merged in order, then the file itself on top; maps deep-merge, everything else replaces).
  static Config load(const std::string& path);
  /// Parses YAML text (`origin` names it in messages; `_base_` is relative to `base_dir`).
  static Config parse(const std::string& text, const std::string& origin,
                      const std::string& base_dir = ".");

  /// Applies `a.b.c=value`; the value is read as YAML (numbers, bools, `[1, 2]` lists, strings).
  void apply_override(const std::string& assignment);

  /// Value at a dotted path, or `fallback` when absent. Records the key as known; `doc` is its
  /// one-line description for the reference.
  template <class T>
  T get(const std::string& path, const T& fallback, const char* doc = nullptr);
  /// Value at a dotted path; ConfigError when absent, null or (for strings) empty.
  template <class T>
  T require(const std::string& path, const char* doc = nullptr);
  /// True when the dotted path is present (also records it as known).
  bool has(const std::string& path);
  /// Raises a ConfigError naming path, origin and value unless `ok`. `what` says what is required.
  void check(const std::string& path, bool ok, const std::string& what) const;
  /// Marks a whole subtree as known (free-form sections).
  void mark_known(const std::string& path, const char* doc = nullptr);
  /// Raises a ConfigError for the first key that no decoder asked for, with the closest valid key.
  void reject_unknown() const;
  /// Runs `decode(*this)` (reads every key through its argument with get/require/has, validates
  /// with check) and returns its result, then reject_unknown(): unknown keys are reported before
  /// any value error. When `decode` stops at an evax::Error (a failed check, a wrong type, a
  /// missing key) it has not asked for every key yet; the keys it would ask for on the defaults
  /// (`decode` run once more on an empty config, where checks and required keys do not throw and
  /// required keys read as T{}) are added, and an unknown key among the rest is raised instead.
  template <class F>
  std::decay_t<std::invoke_result_t<F&, Config&>> decode_all(F&& decode);

  /// Runs `decode` as a probe on a copy of this config (failed checks and missing required keys
  /// do not throw; required keys read as T{}) and adds every key it reads to `keys`. On an empty
  /// config it follows the defaults' branches; a shipped config reaches the branches it selects.
  template <class F>
  void record_keys(F&& decode, ConfigKeys* keys) const;

  ConfigView view(const std::string& prefix = "") { return ConfigView(this, prefix); }
  /// The resolved tree as YAML text (what `config.yaml` in a run directory holds).
  std::string dump() const;
  /// Where a path's value came from: "file:line" or "--set".
  std::string origin(const std::string& path) const;
  /// Name of the top-level file without extension ("" when parsed from text).
  const std::string& name() const { return name_; }
  const YAML::Node& root() const { return root_; }

 private:
  YAML::Node find(const std::string& path) const;
  [[noreturn]] void type_error(const std::string& path, const YAML::Node& n,
                               const std::string& expected) const;
  template <class T>
  T decode(const std::string& path, const YAML::Node& n) const;
  void note_known(const std::string& path);
  /// Throws `e`, except on a probe.
  void fail(const ConfigError& e) const;
  void require_failed(const std::string& path, bool empty) const;
  /// Adds what a read saw to record_ (only on a recording probe).
  void record(const std::string& path, std::string type, std::string dflt, bool required,
              const char* doc) const;

  YAML::Node root_;
  std::map<std::string, std::string> origins_;
  std::set<std::string> known_;
  std::set<std::string> free_;
  std::string name_;
  bool probe_ = false;  // decode_all's key-collecting run on defaults: fail() does not throw
  ConfigKeys* record_ = nullptr;  // record_keys' collection (probe runs only)

  friend class ConfigLoader;
};

/// Levenshtein distance (used for "did you mean" suggestions).
size_t edit_distance(const std::string& a, const std::string& b);

// --- decoding ------------------------------------------------------------------------------------

namespace config_detail {
template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {
  using value_type = T;
};
bool decode_scalar(const YAML::Node& n, bool* out);
bool decode_scalar(const YAML::Node& n, int* out);
bool decode_scalar(const YAML::Node& n, int64_t* out);
bool decode_scalar(const YAML::Node& n, double* out);
bool decode_scalar(const YAML::Node& n, std::string* out);
const char* type_name(bool*);
const char* type_name(int*);
const char* type_name(int64_t*);
const char* type_name(double*);
const char* type_name(std::string*);
// Short names and YAML text of defaults, for the reference.
const char* short_type_name(bool*);
const char* short_type_name(int*);
const char* short_type_name(int64_t*);
const char* short_type_name(double*);
const char* short_type_name(std::string*);
std::string yaml_text(bool v);
std::string yaml_text(int v);
std::string yaml_text(int64_t v);
std::string yaml_text(double v);
std::string yaml_text(const std::string& v);
template <class T>
std::string short_type() {
  if constexpr (IsVector<T>::value) {
    using V = typename IsVector<T>::value_type;
    return std::string("list of ") + short_type_name((V*)nullptr);
  } else {
    return short_type_name((T*)nullptr);
  }
}
template <class T>
std::string yaml_text_of(const T& v) {
  if constexpr (IsVector<T>::value) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + yaml_text(v[i]);
    return s + "]";
  } else {
    return yaml_text(v);
  }
}
}  // namespace config_detail

template <class T>
T Config::decode(const std::string& path, const YAML::Node& n) const {
  using namespace config_detail;
  if constexpr (IsVector<T>::value) {
    using V = typename IsVector<T>::value_type;
    if (!n.IsSequence()) type_error(path, n, std::string("a list of ") + type_name((V*)nullptr));
    T out;
    for (size_t i = 0; i < n.size(); ++i) {
      V v{};
      if (!decode_scalar(n[i], &v))
        type_error(path + "[" + std::to_string(i) + "]", n[i], type_name((V*)nullptr));
      out.push_back(v);
    }
    return out;
  } else {
    T v{};
    if (!decode_scalar(n, &v)) type_error(path, n, type_name((T*)nullptr));
    return v;
  }
}

template <class T>
T Config::get(const std::string& path, const T& fallback, const char* doc) {
  note_known(path);
  if (record_)
    record(path, config_detail::short_type<T>(), config_detail::yaml_text_of(fallback), false, doc);
  YAML::Node n = find(path);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  return decode<T>(path, n);
}

template <class T>
T Config::require(const std::string& path, const char* doc) {
  note_known(path);
  if (record_) record(path, config_detail::short_type<T>(), "", true, doc);
  YAML::Node n = find(path);
  if (!n.IsDefined() || n.IsNull()) {
    require_failed(path, false);
    return T{};
  }
  T v = decode<T>(path, n);
  if constexpr (std::is_same_v<T, std::string>)
    if (v.empty()) require_failed(path, true);
  return v;
}

template <class F>
std::decay_t<std::invoke_result_t<F&, Config&>> Config::decode_all(F&& decode) {
  using R = std::decay_t<std::invoke_result_t<F&, Config&>>;
  auto run = [&]() -> R {
    try {
      return decode(*this);
    } catch (const Error&) {
      // Keys past the failure point were never asked for: learn them from a run on the defaults,
      // which are valid by design (checks and missing required keys do not throw there).
      Config probe;
      probe.probe_ = true;
      try {
        decode(probe);
      } catch (...) {  // keep what it asked for up to there
      }
      known_.insert(probe.known_.begin(), probe.known_.end());
      free_.insert(probe.free_.begin(), probe.free_.end());
      reject_unknown();
      throw;
    }
  };
  R out = run();
  reject_unknown();
  return out;
}

template <class F>
void Config::record_keys(F&& decode, ConfigKeys* keys) const {
  Config probe = *this;
  probe.probe_ = true;
  probe.record_ = keys;
  try {
    decode(probe);
  } catch (const Error&) {  // a value of the wrong type: keep what it read up to there
  }
}

template <class T>
T ConfigView::get(const std::string& key, const T& fallback, const char* doc) const {
  return cfg_->get<T>(path(key), fallback, doc);
}
template <class T>
T ConfigView::require(const std::string& key, const char* doc) const {
  return cfg_->require<T>(path(key), doc);
}

}  // namespace evax
