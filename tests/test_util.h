// Small helpers shared by the test executables.
#pragma once

#include <filesystem>
#include <random>
#include <string>

#include "test_config.h"

namespace evax::test {

inline std::string source_path(const std::string& rel) {
  return std::string(EVAX_SOURCE_DIR) + "/" + rel;
}

/// A fresh, empty directory under the build tree, removed at scope exit.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::random_device rd;
    path_ = std::filesystem::path(EVAX_BINARY_DIR) / "test_tmp" /
            (tag + "-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& rel) const { return (path_ / rel).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace evax::test
