// Logging to the console and a run's log.txt (spdlog underneath, kept out of this header so that
// torch's bundled fmt never meets the system fmt spdlog is built with).
#pragma once

#include <string>

#include "evax/core/error.h"

namespace evax {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

/// Logging set-up for a process.
struct LogOptions {
  /// File that receives every message (empty: console only).
  std::string file;
  /// This process's rank; non-zero ranks print only warnings and errors unless `all_ranks`.
  int rank = 0;
  /// Print info messages on every rank (prefixed with the rank).
  bool all_ranks = false;
  /// Lowest level printed.
  LogLevel level = LogLevel::kInfo;
};

/// (Re)configures the process-wide logger. Safe to call again, e.g. once a run directory exists.
void log_init(const LogOptions& opts);
/// Writes one message.
void log_message(LogLevel level, const std::string& msg);
/// Parses "debug", "info", "warn", "error" (ConfigError otherwise).
LogLevel log_level_from_string(const std::string& s);

template <class... T>
void log_info(const T&... parts) { log_message(LogLevel::kInfo, str_cat(parts...)); }
template <class... T>
void log_warn(const T&... parts) { log_message(LogLevel::kWarn, str_cat(parts...)); }
template <class... T>
void log_error(const T&... parts) { log_message(LogLevel::kError, str_cat(parts...)); }
template <class... T>
void log_debug(const T&... parts) { log_message(LogLevel::kDebug, str_cat(parts...)); }

}  // namespace evax
