#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/report/report.h"
#include "evax/report/run_dir.h"
#include "evax/version.h"

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

std::string evax_version_text() {
  return std::string("evax ") + EVAX_VERSION + " (" + EVAX_COMMIT + ")";
}

namespace {

// The program's own command line (/proc/self/cmdline: NUL-separated), for environment.json.
std::string command_line() {
  std::string raw;
  try {
    raw = read_file("/proc/self/cmdline");
  } catch (const std::exception&) {
    return "";
  }
  std::string out;
  for (char c : raw) out += c == '\0' ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// GPU names from nvidia-smi when CUDA is present (LibTorch's device properties need the CUDA
// headers, which the app does not compile against); empty when it cannot say.
std::vector<std::string> gpu_names() {
  std::vector<std::string> names;
  FILE* p = ::popen("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null", "r");
  if (!p) return names;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) {
    std::string s = buf;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    if (!s.empty()) names.push_back(s);
  }
  ::pclose(p);
  return names;
}

void collect_origins(const Config& cfg, const YAML::Node& n, const std::string& path,
                     nlohmann::ordered_json* out) {
  if (n.IsMap() && n.size() > 0) {
    for (const auto& kv : n)
      collect_origins(cfg, kv.second, (path.empty() ? "" : path + ".") + kv.first.as<std::string>(),
                      out);
    return;
  }
  if (path.empty()) return;
  std::string key = path;
  std::replace(key.begin(), key.end(), '.', '/');
  (*out)[key] = cfg.origin(path);
}

}  // namespace

void record_run_context(const std::string& dir, const Config& cfg, const DistEnv& env,
                        const ConfigDecoder& decode) {
  // Where each value of config.yaml came from ("file:line" or "--set ..."), keyed by the path
  // with '/' (the report's key path); values not listed are the code's defaults.
  nlohmann::ordered_json origins = nlohmann::ordered_json::object();
  collect_origins(cfg, cfg.root(), "", &origins);
  write_file_atomic(dir + "/config_origins.json", origins.dump(2) + "\n");
  if (decode) {
    // Every key's default on this config's branch (the report marks the values that differ).
    ConfigKeys keys;
    cfg.record_keys(decode, &keys);
    nlohmann::ordered_json defaults = nlohmann::ordered_json::object();
    for (const auto& [path, k] : keys) {
      if (k.type.empty() || k.free_form) continue;
      std::string key = path;
      std::replace(key.begin(), key.end(), '.', '/');
      defaults[key] = k.required ? nlohmann::ordered_json(nullptr)
                                 : nlohmann::ordered_json(k.defaults.empty() ? "" : k.defaults[0]);
    }
    write_file_atomic(dir + "/config_defaults.json", defaults.dump(2) + "\n");
  }

  nlohmann::ordered_json e;
  e["evax"] = {{"version", EVAX_VERSION}, {"commit", EVAX_COMMIT}};
  e["libtorch"] = TORCH_VERSION;
  const bool cuda = torch::cuda::is_available();
  nlohmann::ordered_json c = {{"available", cuda}};
  if (cuda) {
    c["devices"] = static_cast<int64_t>(torch::cuda::device_count());
    try {
      const long v = at::detail::getCUDAHooks().versionCUDART();
      c["runtime"] = std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
    } catch (const std::exception&) {
    }
    const auto names = gpu_names();
    if (!names.empty()) c["names"] = names;
  }
  e["cuda"] = c;
  std::string device = "auto";
  if (cfg.root()["device"] && cfg.root()["device"].IsScalar())
    device = cfg.root()["device"].as<std::string>();
  e["device"] = device;
  e["ranks"] = {{"world_size", env.world_size},
                {"local_world_size", env.local_world_size},
                {"launcher", env.source}};
  e["threads"] = {{"intra_op", at::get_num_threads()},
                  {"cores", static_cast<int64_t>(std::thread::hardware_concurrency())}};
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  e["host"] = host;
  e["command"] = command_line();
  write_file_atomic(dir + "/environment.json", e.dump(2) + "\n");
}

std::string finish_run(const std::string& dir, const std::string& state,
                       const std::string& message) {
  try {
    run_status_write(dir, state, message);
    // The thread policy is applied after the start: record the count the run trained with.
    auto e = nlohmann::ordered_json::parse(read_file(dir + "/environment.json"));
    e["threads"]["intra_op"] = at::get_num_threads();
    write_file_atomic(dir + "/environment.json", e.dump(2) + "\n");
  } catch (const std::exception& e) {
    log_warn("cannot record the run's end in ", dir, ": ", e.what());
  }
  try {
    ReportOptions o;
    o.generator = evax_version_text();
    const std::string path = report_write(dir, "", o);
    log_info("report: ", path);
    return path;
  } catch (const std::exception& e) {
    // The run's results are written already: a report that fails must not fail the run.
    log_warn("cannot write the report of ", dir, ": ", e.what());
    return "";
  }
}

std::string start_run(const RunArgs& a, const Config& cfg, const DistEnv& env,
                      const ConfigDecoder& decode) {
  std::string dir = make_run_dir(a.run_dir, cfg.name());
  LogOptions lo;
  lo.file = dir + "/log.txt";
  lo.level = log_level_from_string(a.log_level);
  log_init(lo);
  write_file_atomic(dir + "/config.yaml", cfg.dump());
  record_run_context(dir, cfg, env, decode);
  log_info("run directory: ", dir);
  return dir;
}

DistRun start_distributed_run(const RunArgs& a, const Config& cfg, const CommOptions& comm,
                              const std::string& command, const ConfigDecoder& decode) {
  DistRun r;
  r.env = dist_env_from_environment();
  if (r.env.world_size > 1 && a.run_dir.empty())
    raise<UsageError>("evax ", command, ": distributed runs need --run-dir (all ranks must agree on it)");
  if (r.env.world_size > 1) r.comm = comm_create(r.env, comm);
  if (r.env.rank == 0) {
    r.dir = start_run(a, cfg, r.env, decode);
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
