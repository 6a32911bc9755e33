// Typed errors. User, config and data problems throw one of these with the offending file, key or
// value in the message; internal invariants use EVAX_ASSERT. Only main() turns them into exit codes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace evax {

/// Process exit codes shared by every command (`evax --help` and the README list them; launchers
/// and SLURM scripts tell a bug from a resource problem by them).
enum class ExitCode : int {
  kOk = 0,
  kInternal = 1,     ///< a bug in evax (failed invariant, unexpected exception)
  kUsage = 2,        ///< bad command line or config
  kData = 3,         ///< unreadable or invalid input data
  kDist = 4,         ///< distributed peer failure: a rank died, timed out or could not be reached
  kOutOfMemory = 5,  ///< out of GPU or host memory (smaller batch, smaller images or bf16)
  kPreempted = 6,    ///< SIGTERM/SIGUSR1 stopped training after a checkpoint (--resume auto)
};

/// Base of every evax error. `what()` is one line meant for the user.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
  virtual ExitCode exit_code() const { return ExitCode::kInternal; }
};

/// Bad command-line usage (unknown flag, missing argument).
class UsageError : public Error {
 public:
  using Error::Error;
  ExitCode exit_code() const override { return ExitCode::kUsage; }
};

/// Bad configuration: unknown key, wrong type, out-of-range value. The message names the file,
/// the line and the YAML path.
class ConfigError : public Error {
 public:
  using Error::Error;
  ExitCode exit_code() const override { return ExitCode::kUsage; }
};

/// Bad input data: unreadable file, malformed DICOM/checkpoint/manifest. Names the path.
class DataError : public Error {
 public:
  using Error::Error;
  ExitCode exit_code() const override { return ExitCode::kData; }
};

/// A broken internal invariant (a bug). Thrown, never aborted, so a library user can recover.
class InternalError : public Error {
 public:
  using Error::Error;
  ExitCode exit_code() const override { return ExitCode::kInternal; }
};

namespace detail {
inline void str_cat(std::ostringstream&) {}
template <class T, class... R>
void str_cat(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  str_cat(os, rest...);
}
}  // namespace detail

/// Concatenates any streamable values into a string.
template <class... T>
std::string str_cat(const T&... parts) {
  std::ostringstream os;
  detail::str_cat(os, parts...);
  return os.str();
}

/// Throws an error of type `E` with the concatenated message parts.
template <class E, class... T>
[[noreturn]] void raise(const T&... parts) {
  throw E(str_cat(parts...));
}

}  // namespace evax

/// Internal invariant: throws evax::InternalError with file:line (never aborts).
#define EVAX_ASSERT(cond, ...)                                                                \
  do {                                                                                        \
    if (!(cond))                                                                              \
      ::evax::raise<::evax::InternalError>("internal error at ", __FILE__, ":", __LINE__, ": ", \
                                           #cond, " ", ##__VA_ARGS__);                        \
  } while (0)

/// User-facing check: throws `E` with the message parts when `cond` is false.
#define EVAX_CHECK(E, cond, ...)                    \
  do {                                              \
    if (!(cond)) ::evax::raise<E>(__VA_ARGS__);      \
  } while (0)
