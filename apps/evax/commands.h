// The evax subcommands. Each lives in its own file and returns a process exit code.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "evax/core/cli.h"
#include "evax/core/config.h"

#include <memory>

#include "evax/distributed/comm.h"
#include "evax/distributed/env.h"

namespace evax::app {

using Args = std::vector<std::string>;

int cmd_synth(const Args& args);
int cmd_decode(const Args& args);
int cmd_demo(const Args& args);
int cmd_inspect(const Args& args);
int cmd_launch(const Args& args);
int cmd_manifest(const Args& args);
int cmd_metrics(const Args& args);
int cmd_pretrain(const Args& args);
int cmd_convert(const Args& args);
int cmd_embed(const Args& args);
int cmd_finetune(const Args& args);
int cmd_evaluate(const Args& args);
int cmd_predict(const Args& args);
int cmd_teacher(const Args& args);
int cmd_segment(const Args& args);
int cmd_cam(const Args& args);
int cmd_cam_eval(const Args& args);
int cmd_report(const Args& args);
int cmd_compare(const Args& args);
int cmd_config(const Args& args);

/// Options every config-driven command shares: --config, --set (repeatable), --run-dir.
struct RunArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string run_dir;
  std::string log_level = "info";
};

/// Declares --config, --set, --run-dir and --log-level on a command's parser.
void add_run_args(ArgParser& p, RunArgs& a);
/// Loads `--config` (or `default_config` when empty; UsageError when both are) and applies every
/// `--set`.
Config load_run_config(const RunArgs& a, const std::string& default_config);
/// The keys a command's config decoder reads (Config::record_keys), for the run's defaults.
using ConfigDecoder = std::function<void(Config&)>;

/// Creates the run directory, starts logging into its log.txt and writes the resolved config.yaml
/// and record_run_context's files.
std::string start_run(const RunArgs& a, const Config& cfg, const DistEnv& env = {},
                      const ConfigDecoder& decode = {});

/// "evax <version> (<commit>)": the build this binary comes from.
std::string evax_version_text();
/// Writes what a report needs besides the run's own files: config_origins.json (where each value
/// of config.yaml came from: "file:line" or "--set ..."), config_defaults.json (with `decode`: the
/// default of every key the command reads, as YAML text) and environment.json (evax version and
/// commit, LibTorch, CUDA and its devices, the device setting, ranks, threads, host, command line).
void record_run_context(const std::string& dir, const Config& cfg, const DistEnv& env,
                        const ConfigDecoder& decode = {});
/// The end of a run, on rank 0: status.json "finished" or "stopped" (with `message`), the thread
/// count it trained with, and report.html. A report that cannot be written is logged, not raised
/// (the run's results are written already). Returns the report's path, "" when it failed.
std::string finish_run(const std::string& dir, const std::string& state,
                       const std::string& message = "");

/// A training command's process set-up under `evax launch` / torchrun / SLURM (or alone).
struct DistRun {
  DistEnv env;                  ///< this process's rank, world and local rank
  std::unique_ptr<Comm> comm;   ///< null for a world of one
  std::string dir;              ///< the run directory (created by rank 0)
};

/// Reads the distributed environment, connects the ranks (`comm` options), creates the run
/// directory on rank 0 (logging there; other ranks log to the console with their rank) and waits
/// until it exists. `command` names the command in errors (distributed runs need --run-dir).
DistRun start_distributed_run(const RunArgs& a, const Config& cfg, const CommOptions& comm,
                              const std::string& command, const ConfigDecoder& decode = {});

}  // namespace evax::app
