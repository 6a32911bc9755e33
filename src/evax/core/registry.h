// Name → factory tables (models, datasets, tasks). Lookups are case-insensitive; an unknown name
// raises a ConfigError that lists the valid ones.
#pragma once

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "evax/core/error.h"

namespace evax {

template <class Factory>
class Registry {
 public:
  /// `kind` names the table in messages ("model", "dataset").
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  /// Registers `name`; registering a name twice is a bug.
  void add(const std::string& name, Factory f) {
    auto [it, fresh] = items_.emplace(key(name), Entry{name, std::move(f)});
    EVAX_ASSERT(fresh, kind_, " '", name, "' registered twice");
    (void)it;
  }
  bool contains(const std::string& name) const { return items_.count(key(name)) > 0; }
  /// The factory of `name`, or ConfigError listing the registered names.
  const Factory& get(const std::string& name) const {
    auto it = items_.find(key(name));
    if (it == items_.end()) {
      std::string valid;
      for (const auto& n : names()) valid += (valid.empty() ? "" : ", ") + n;
      raise<ConfigError>("unknown ", kind_, " '", name, "' (valid: ", valid, ")");
    }
    return it->second.factory;
  }
  /// Registered names in their original spelling, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : items_) out.push_back(kv.second.name);
    return out;
  }

 private:
  struct Entry {
    std::string name;
    Factory factory;
  };
  static std::string key(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  }
  std::string kind_;
  std::map<std::string, Entry> items_;
};

}  // namespace evax
