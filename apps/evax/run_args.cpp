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

DistRun start_distributed_run(const RunArgs& a, const Config& cfg, const CommOptions& comm,
                              const std::string& command) {
  DistRun r;
  r.env = dist_env_from_environment();
  if (r.env.world_size > 1 && a.run_dir.empty())
    raise<UsageError>("evax ", command, ": distributed runs need --run-dir (all ranks must agree on it)");
  if (r.env.world_size > 1) r.comm = comm_create(r.env, comm);
  if (r.env.rank == 0) {
    r.dir = start_run(a, cfg);
  } else {
    r.dir = a.run_dir;
    LogOptions lo;
    lo.rank = r.env.rank;
    lo.level = log_level_from_string(a.log_level);
    log_init(lo);
  }
  if (r.comm) {
    log_info("distributed: ", describe(r.env), ", backend ", r.comm->backend_name());
    r.comm->barrier();  // rank 0 has created the run directory
  }
  return r;
}

}  // namespace evax::app
