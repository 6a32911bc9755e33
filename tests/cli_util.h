// Helpers for the tests that run the evax binary: where it is, a shell command's exit code, a small
// synthetic dataset made by `evax synth` once per build tree, and config files for its runs.
#pragma once

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_config.h"

namespace evax::test {

/// The evax binary under test: the environment variable EVAX_BIN (ctest sets it).
inline std::string evax_bin() {
  const char* b = std::getenv("EVAX_BIN");
  REQUIRE(b != nullptr);
  return b;
}

/// Runs `cmd` with the shell; its exit code, or -1 when it did not exit (a signal).
inline int shell(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/// `<build>/test_tmp/<name>`: made by `evax synth --out <dir> <synth_args>` the first time it is
/// asked for, then shared by every test process of the build tree. Each maker writes a folder of
/// its own and renames it into place, so the folder exists only complete; a process that loses
/// the race drops its copy.
inline std::string synth_dataset(const std::string& name, const std::string& synth_args) {
  namespace fs = std::filesystem;
  const std::string dir = std::string(EVAX_BINARY_DIR) + "/test_tmp/" + name;
  if (!fs::exists(dir)) {
    const std::string tmp = dir + ".tmp" + std::to_string(::getpid());
    REQUIRE(shell(evax_bin() + " synth --out '" + tmp + "' " + synth_args + " 2>/dev/null") == 0);
    std::error_code ec;
    fs::rename(tmp, dir, ec);  // another test process may have won the race: fine
    if (ec) fs::remove_all(tmp, ec);
  }
  return dir;
}

/// Writes a config file for `evax <command> --config`: `head`, then each `base` entry (top-level
/// key, its text) whose key `extra` does not set, then `extra`. So a top-level key of `extra`
/// replaces the base's entry of that key as a whole (configs reject a key given twice). Returns
/// `path`.
inline std::string write_config_file(const std::string& path,
                                     const std::vector<std::pair<std::string, std::string>>& base,
                                     const std::string& extra, const std::string& head = "") {
  std::set<std::string> replaced;
  std::istringstream lines(extra);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line[0] != ' ' && line.find(':') != std::string::npos)
      replaced.insert(line.substr(0, line.find(':')));
  std::ofstream out(path);
  out << head;
  for (const auto& [key, text] : base)
    if (!replaced.count(key)) out << text;
  out << extra;
  return path;
}

}  // namespace evax::test
