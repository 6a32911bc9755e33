// File helpers: whole-file reads, atomic writes (temporary file, fsync, rename) and run directories.
#pragma once

#include <string>

namespace evax {

/// Reads a whole file (DataError naming the path when it cannot).
std::string read_file(const std::string& path);
/// Writes `content` so that `path` holds either the old or the new content, never a torn file.
void write_file_atomic(const std::string& path, const std::string& content);

/// The run directory a command will use: `requested` when given, else
/// `runs/<config_name>-<YYYYmmdd-HHMMSS>`. Creates nothing.
std::string run_dir_resolve(const std::string& requested, const std::string& config_name);

/// Resolves the run directory of a command: `requested` when given, else
/// `runs/<config_name>-<YYYYmmdd-HHMMSS>`. Creates it (and parents).
std::string make_run_dir(const std::string& requested, const std::string& config_name);

}  // namespace evax
