// torch / timm reference losses for the classify tests, made by tools/classify_reference.py with the
// pinned venv once per build tree (regenerated when the script is newer). Empty without
// EVAX_PYTHON: tests then skip.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "evax/io/safetensors.h"
#include "test_util.h"

namespace evax::test {

inline const TensorMap& classify_reference() {
  static const TensorMap map = [] {
    namespace fs = std::filesystem;
    const std::string python = EVAX_PYTHON;
    if (python.empty()) return TensorMap{};
    const std::string script = source_path("tools/classify_reference.py");
    const std::string out =
        std::string(EVAX_BINARY_DIR) + "/fixtures/classify/loss_reference.safetensors";
    std::error_code ec;
    if (!fs::exists(out) || fs::last_write_time(script) > fs::last_write_time(out, ec)) {
      const std::string cmd = "\"" + python + "\" \"" + script + "\" --out \"" + out + "\"";
      if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
    }
    return safetensors_load(out);
  }();
  return map;
}

/// The reference tensor `name` (std::runtime_error when absent).
inline at::Tensor loss_ref(const std::string& name) {
  const at::Tensor* t = find(classify_reference(), name);
  if (!t) throw std::runtime_error("no reference tensor " + name);
  return *t;
}

}  // namespace evax::test
