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

/// A view of one map of a Config at a dotted prefix; keys are relative to it.
class ConfigView {
 public:
  ConfigView(Config* cfg, std::string prefix) : cfg_(cfg), prefix_(std::move(prefix)) {}
  template <class T>
  T get(const std::string& key, const T& fallback) const;
  template <class T>
  T require(const std::string& key) const;
  bool has(const std::string& key) const;
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

  /// Value at a dotted path, or `fallback` when absent. Records the key as known.
  template <class T>
  T get(const std::string& path, const T& fallback);
  /// Value at a dotted path; ConfigError when absent, null or (for strings) empty.
  template <class T>
  T require(const std::string& path);
  /// True when the dotted path is present (also records it as known).
  bool has(const std::string& path);
  /// Raises a ConfigError naming path, origin and value unless `ok`. `what` says what is required.
  void check(const std::string& path, bool ok, const std::string& what) const;
  /// Marks a whole subtree as known (free-form sections).
  void mark_known(const std::string& path);
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

  YAML::Node root_;
  std::map<std::string, std::string> origins_;
  std::set<std::string> known_;
  std::set<std::string> free_;
  std::string name_;
  bool probe_ = false;  // decode_all's key-collecting run on defaults: fail() does not throw

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
T Config::get(const std::string& path, const T& fallback) {
  note_known(path);
  YAML::Node n = find(path);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  return decode<T>(path, n);
}

template <class T>
T Config::require(const std::string& path) {
  note_known(path);
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

template <class T>
T ConfigView::get(const std::string& key, const T& fallback) const {
  return cfg_->get<T>(path(key), fallback);
}
template <class T>
T ConfigView::require(const std::string& key) const {
  return cfg_->require<T>(path(key));
}

}  // namespace evax
