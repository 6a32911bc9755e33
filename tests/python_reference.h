// Reference tensors computed by a tools/ script with the pinned venv, once per build tree
// (regenerated when the script is newer than its output), shared by the layers' tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "evax/io/safetensors.h"
#include "test_util.h"

namespace evax::test {

/// Runs `tools/<script> --out <build>/fixtures/<out>` when needed and loads the result; empty when
/// no EVAX_PYTHON is configured (callers skip visibly).
inline TensorMap python_reference(const std::string& script_name, const std::string& out_name) {
  namespace fs = std::filesystem;
  const std::string python = EVAX_PYTHON;
  if (python.empty()) return TensorMap{};
  const std::string script = source_path("tools/" + script_name);
  const std::string out = std::string(EVAX_BINARY_DIR) + "/fixtures/" + out_name;
  std::error_code ec;
  if (!fs::exists(out) || fs::last_write_time(script) > fs::last_write_time(out, ec)) {
    const std::string cmd = "\"" + python + "\" \"" + script + "\" --out \"" + out + "\"";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }
  return safetensors_load(out);
}

/// The tensor `name` of a reference map (std::runtime_error when absent: script and test disagree).
inline at::Tensor reference_tensor(const TensorMap& map, const std::string& name) {
  const at::Tensor* t = find(map, name);
  if (!t) throw std::runtime_error("no reference tensor " + name);
  return *t;
}

}  // namespace evax::test
