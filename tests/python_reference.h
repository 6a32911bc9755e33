// Reference outputs computed by a tools/ script with the pinned venv, once per build tree
// (regenerated when the script, or the EVA-X model code it may import,
// tools/evax_reference_common.py, is newer than its output), shared by the layers' tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "evax/io/safetensors.h"
#include "test_util.h"

namespace evax::test {

/// `<build>/fixtures/<out_name>`, made by `tools/<script_name> --out <it>` with EVAX_PYTHON unless
/// it is newer than the script and, for a script that imports it, the shared model code;
/// std::runtime_error when the script fails.
inline std::string python_reference_file(const std::string& script_name,
                                         const std::string& out_name) {
  namespace fs = std::filesystem;
  const std::string script = source_path("tools/" + script_name);
  const std::string common = source_path("tools/evax_reference_common.py");
  const std::string out = std::string(EVAX_BINARY_DIR) + "/fixtures/" + out_name;
  std::ifstream in(script);
  const std::string code((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::error_code ec;
  const auto made = fs::last_write_time(out, ec);
  const bool imports_common = code.find("evax_reference_common") != std::string::npos;
  if (!fs::exists(out) || fs::last_write_time(script) > made ||
      (imports_common && fs::last_write_time(common) > made)) {
    const std::string cmd =
        "\"" + std::string(EVAX_PYTHON) + "\" \"" + script + "\" --out \"" + out + "\"";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }
  return out;
}

/// The tensors python_reference_file() writes, loaded; empty when no EVAX_PYTHON is configured
/// (callers skip visibly).
inline TensorMap python_reference(const std::string& script_name, const std::string& out_name) {
  if (std::string(EVAX_PYTHON).empty()) return TensorMap{};
  return safetensors_load(python_reference_file(script_name, out_name));
}

/// The tensor `name` of a reference map (std::runtime_error when absent: script and test disagree).
inline at::Tensor reference_tensor(const TensorMap& map, const std::string& name) {
  const at::Tensor* t = find(map, name);
  if (!t) throw std::runtime_error("no reference tensor " + name);
  return *t;
}

/// The tensors of `map` named prefix + <name>, as <name>, in map order.
inline TensorMap with_prefix(const TensorMap& map, const std::string& prefix) {
  TensorMap out;
  for (const auto& [k, v] : map)
    if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), v);
  return out;
}

}  // namespace evax::test
