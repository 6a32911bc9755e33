// Helpers for the tests that start evax training processes themselves (launchers, SLURM-style
// ranks, torchrun agents) and watch, signal and compare them.
#pragma once

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_util.h"
#include "evax/core/files.h"
#include "evax/io/safetensors.h"
#include "test_util.h"

namespace evax::test {

/// The tiny pretraining run of tests/pretrain (a depth-2 EVA-X-Ti at 96 px on 48 synthetic
/// images, pixel targets); a top-level key of `extra` replaces the base's entry.
inline std::string tiny_pretrain_config(const TempDir& tmp, const std::string& extra = "") {
  const std::string data =
      synth_dataset("pretrain_synth", "--n 48 --size 96 --seed 3 --no-dicom --threads 1");
  const std::vector<std::pair<std::string, std::string>> base = {
      {"model", "model: {name: eva_x_tiny_patch16, depth: 2}\n"},
      {"target", "target: {kind: pixels}\n"},
      {"data", "data:\n"
               "  manifest: " + data + "/pretrain.csv\n"
               "  split: all\n"
               "  views: {student_size: 96, teacher_size: 96}\n"
               "  loader: {batch_size: 8, workers: 2}\n"},
      {"masking", "masking: {kind: uniform, ratio: 0.5}\n"},
      {"optimizer", "optimizer: {lr: 3.0e-3, min_lr: 1.0e-4, weight_decay: 0.05}\n"},
      {"train", "train: {epochs: 4, warmup_epochs: 0.5, log_every: 1}\n"},
      {"seed", "seed: 7\n"},
      {"threads", "threads: 1\n"}};
  return write_config_file(tmp / "cfg.yaml", base, extra);
}

/// A started process: argv[0] is run with PATH lookup, `env` entries ("K=V") are added to (or
/// replace) this process's environment, `unset` names are removed, stdout+stderr go to `log`.
struct Proc {
  pid_t pid = -1;
  std::string log;
};

inline Proc spawn(const std::vector<std::string>& argv, const std::string& log,
                  const std::vector<std::string>& env = {},
                  const std::vector<std::string>& unset = {}) {
  Proc p;
  p.log = log;
  p.pid = ::fork();
  REQUIRE(p.pid >= 0);
  if (p.pid == 0) {
    ::setpgid(0, 0);  // signals for the test's process group never reach it
    for (const auto& k : unset) ::unsetenv(k.c_str());
    for (const auto& kv : env) {
      const auto eq = kv.find('=');
      ::setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
    }
    if (!std::freopen(log.c_str(), "w", stderr)) ::_exit(126);
    ::dup2(2, 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return p;
}

/// Exit code of a finished process (128 + N for death by signal N); -1 after `timeout_s` (the
/// process group is then killed).
inline int wait_exit(const Proc& p, double timeout_s = 120) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  int st = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t got = ::waitpid(p.pid, &st, WNOHANG);
    if (got == p.pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(-p.pid, SIGKILL);
  ::waitpid(p.pid, &st, 0);
  return -1;
}

/// True once `pid` has exited (and is reaped).
inline bool exited(const Proc& p, int* code) {
  int st = 0;
  if (::waitpid(p.pid, &st, WNOHANG) != p.pid) return false;
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return true;
}

/// The step of metrics.csv's last complete row (0 when none): with log_every 1, the optimizer
/// steps rank 0 has finished.
inline int64_t last_logged_step(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.csv");
  std::string line, last;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      header = false;
      continue;
    }
    if (!line.empty() && !in.eof()) last = line;
  }
  if (last.empty()) return 0;
  try {
    return std::stoll(last.substr(0, last.find(',')));
  } catch (const std::exception&) {
    return 0;
  }
}

/// Waits until rank 0 has logged step >= `step`; false when `p` exits first (its code in *code)
/// or after `timeout_s`.
inline bool wait_for_step(const Proc& p, const std::string& run_dir, int64_t step, int* code,
                          double timeout_s = 120) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (last_logged_step(run_dir) >= step) return true;
    if (exited(p, code)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

/// The pids of `parent`'s children (Linux /proc/<pid>/task/<pid>/children).
inline std::vector<pid_t> child_pids(pid_t parent) {
  std::ifstream in("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) +
                   "/children");
  std::vector<pid_t> out;
  for (pid_t c; in >> c;) out.push_back(c);
  return out;
}

/// The value of `var` in process `pid`'s environment ("" when unset).
inline std::string env_of(pid_t pid, const std::string& var) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::string entry;
  while (std::getline(in, entry, '\0'))
    if (entry.rfind(var + "=", 0) == 0) return entry.substr(var.size() + 1);
  return "";
}

/// The newest checkpoint directory of a run (checkpoints/step-*), "" when none.
inline std::string newest_checkpoint(const std::string& run_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> dirs;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(run_dir + "/checkpoints", ec))
    if (e.path().filename().string().rfind("step-", 0) == 0) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  return dirs.empty() ? "" : dirs.back();
}

/// model.safetensors of a run's newest checkpoint.
inline TensorMap final_weights(const std::string& run_dir) {
  const std::string dir = newest_checkpoint(run_dir);
  REQUIRE(!dir.empty());
  return safetensors_load(dir + "/model.safetensors");
}

/// The step a checkpoint directory holds (its step-N name).
inline int64_t checkpoint_step(const std::string& dir) {
  const std::string name = std::filesystem::path(dir).filename().string();
  return std::stoll(name.substr(5));
}

/// A seed for a test's random choices: EVAX_TEST_SEED when set (to repeat a run), else random.
/// Printed on stdout so that a failing run can be repeated.
inline uint64_t test_seed(const std::string& what) {
  uint64_t seed = 0;
  if (const char* s = std::getenv("EVAX_TEST_SEED")) {
    seed = std::strtoull(s, nullptr, 10);
  } else {
    std::random_device rd;
    seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  std::cout << what << ": seed " << seed << " (repeat with EVAX_TEST_SEED=" << seed << ")"
            << std::endl;
  return seed;
}

}  // namespace evax::test
