// Preemption: SIGTERM or SIGUSR1 ask a training run to stop. The handler only records the signal;
// the trainer acts on it at a step boundary that every rank agrees on, writes a resumable
// checkpoint and throws Preempted, which the evax binary turns into exit code 6, so a cluster
// script can requeue the job and `--resume auto` continues it.
#pragma once

#include <string>

#include "evax/core/error.h"

namespace evax {

/// Exit code of a run stopped by SIGTERM/SIGUSR1 once its checkpoint was written (`--resume auto`
/// continues it).
constexpr ExitCode kExitPreempted = ExitCode::kPreempted;

/// A training run stopped on request (SIGTERM/SIGUSR1) after writing a resumable checkpoint.
class Preempted : public Error {
 public:
  using Error::Error;
  ExitCode exit_code() const override { return kExitPreempted; }
};

/// Records SIGTERM and SIGUSR1 (async-signal-safe: the handler only stores the signal and counts)
/// instead of letting them kill the process, for the guard's lifetime. On destruction the
/// previous handlers come back, unless a signal was recorded: the process is then on its way to
/// exit with kExitPreempted, and a further signal must not kill it half-way.
class PreemptGuard {
 public:
  PreemptGuard();
  ~PreemptGuard();
  PreemptGuard(const PreemptGuard&) = delete;
  PreemptGuard& operator=(const PreemptGuard&) = delete;

  /// The first signal recorded since the guard was made (0: none).
  int signal() const;
  /// Signals recorded since the guard was made.
  int count() const;

 private:
  bool installed_ = false;  // false for a nested guard: the outer one owns the handlers
};

/// "SIGTERM", "SIGUSR1" or "signal N".
std::string signal_name(int sig);

}  // namespace evax
