#include <filesystem>

#include "commands.h"
#include "evax/core/files.h"
#include "evax/core/log.h"

namespace evax::app {

void add_run_args(ArgParser& p, RunArgs& a) {
  p.option("--config", &a.config, "FILE", "YAML config (`_base_` files are merged first)");
  p.option("--set", &a.sets, "KEY=VALUE", "override one config value, e.g. synth.n=500");
  p.option("--run-dir", &a.run_dir, "DIR", "run directory (default: runs/<config>-<timestamp>)");
  p.option("--log-level", &a.log_level, "LEVEL", "debug, info, warn or error");
}

Config load_run_config(const RunArgs& a, const std::string& default_config) {
  std::string path = a.config;
  if (path.empty() && default_config.empty())
    raise<UsageError>("--config FILE is required (a YAML config under configs/)");
  if (path.empty()) {
    // Prefer the checkout's configs/ (cwd), then the one this binary was built from.
    path = "configs/" + default_config;
    if (!std::filesystem::exists(path)) path = std::string(EVAX_CONFIG_DIR) + "/" + default_config;
  }
  Config cfg = Config::load(path);
  for (const auto& s : a.sets) cfg.apply_override(s);
  return cfg;
}

std::string start_run(const RunArgs& a, const Config& cfg) {
  std::string dir = make_run_dir(a.run_dir, cfg.name());
  LogOptions lo;
  lo.file = dir + "/log.txt";
  lo.level = log_level_from_string(a.log_level);
  log_init(lo);
  write_file_atomic(dir + "/config.yaml", cfg.dump());
  log_info("run directory: ", dir);
  return dir;
}

}  // namespace evax::app
