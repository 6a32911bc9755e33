#include "evax/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace evax {
namespace {

std::mutex g_mu;
std::shared_ptr<spdlog::logger> g_logger;
LogOptions g_opts;

spdlog::level::level_enum to_spd(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make_logger(const LogOptions& o) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  const bool quiet_rank = o.rank != 0 && !o.all_ranks;
  console->set_level(quiet_rank ? spdlog::level::warn : to_spd(o.level));
  const std::string rank = o.rank != 0 || o.all_ranks ? "[rank " + std::to_string(o.rank) + "] " : "";
  console->set_pattern("[%H:%M:%S] %^%l%$ " + rank + "%v");
  std::vector<spdlog::sink_ptr> sinks{console};
  // Only rank 0 owns the run directory's log file.
  if (!o.file.empty() && o.rank == 0) {
    try {
      auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(o.file, false);
      file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
      file->set_level(to_spd(o.level));
      sinks.push_back(file);
    } catch (const spdlog::spdlog_ex& e) {
      raise<DataError>("cannot open log file '", o.file, "': ", e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("evax", sinks.begin(), sinks.end());
  logger->set_level(to_spd(o.level));
  logger->flush_on(spdlog::level::info);
  return logger;
}

}  // namespace

void log_init(const LogOptions& opts) {
  auto logger = make_logger(opts);
  std::lock_guard<std::mutex> lock(g_mu);
  g_opts = opts;
  g_logger = logger;
}

void log_message(LogLevel level, const std::string& msg) {
  std::shared_ptr<spdlog::logger> logger;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_logger) g_logger = make_logger(g_opts);
    logger = g_logger;
  }
  logger->log(to_spd(level), msg);
}

LogLevel log_level_from_string(const std::string& s) {
  if (s == "debug") return LogLevel::kDebug;
  if (s == "info") return LogLevel::kInfo;
  if (s == "warn") return LogLevel::kWarn;
  if (s == "error") return LogLevel::kError;
  raise<ConfigError>("unknown log level '", s, "' (valid: debug, info, warn, error)");
}

}  // namespace evax
