// evax launch: runs N copies of a command on this machine as the ranks of one data-parallel job
// (a single-node torchrun). Each child gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
// MASTER_ADDR and MASTER_PORT; if one fails, the others are stopped. SIGTERM and SIGUSR1 are
// forwarded as preemption requests: the ranks checkpoint and exit with code 6, which launch returns.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "commands.h"
#include "evax/core/log.h"
#include "evax/train/preempt.h"

extern char** environ;

namespace evax::app {
namespace {

/// Seconds between SIGTERM and SIGKILL when stopping the ranks.
constexpr double kGraceSeconds = 5.0;

// SIGINT (stop now) and the preemption signals SIGTERM/SIGUSR1 (the ranks checkpoint first) are
// counted apart: launch treats them differently.
volatile sig_atomic_t g_int_count = 0;
volatile sig_atomic_t g_term_count = 0;
volatile sig_atomic_t g_usr1_count = 0;

extern "C" void on_signal(int sig) {
  if (sig == SIGINT) g_int_count = g_int_count + 1;
  if (sig == SIGTERM) g_term_count = g_term_count + 1;
  if (sig == SIGUSR1) g_usr1_count = g_usr1_count + 1;
}

/// A port that is free now (the kernel's pick for port 0); rank 0's store binds it moments later.
int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) raise<DataError>("evax launch: socket(): ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int err = errno;
    ::close(fd);
    raise<DataError>("evax launch: cannot find a free port: ", std::strerror(err));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

bool on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= dirs.size()) {
    size_t colon = dirs.find(':', pos);
    const size_t len = colon == std::string::npos ? std::string::npos : colon - pos;
    std::string dir = dirs.substr(pos, len);
    if (dir.empty()) dir = ".";
    const std::string file = dir + "/" + name;
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(file.c_str(), X_OK) == 0)
      return true;
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  return false;
}

std::string self_exe() {
  std::vector<char> buf(4096);
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) raise<InternalError>("evax launch: cannot read /proc/self/exe");
  return std::string(buf.data(), static_cast<size_t>(n));
}

/// The parent's environment without the variables launch sets, plus `extra`.
std::vector<std::string> child_environment(const std::vector<std::string>& extra) {
  static const char* kOwned[] = {"RANK",        "LOCAL_RANK",  "WORLD_SIZE",
                                 "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                 "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const std::string k = kv.substr(0, kv.find('='));
    if (std::none_of(std::begin(kOwned), std::end(kOwned), [&](const char* o) { return k == o; }))
      env.push_back(kv);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return str_cat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::strsignal(WTERMSIG(status));
    return str_cat("was killed by signal ", WTERMSIG(status), " (", name ? name : "?", ")");
  }
  return "stopped";
}

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
};

/// Signals each child's process group: the child and whatever it started (e.g. under `sh -c`).
void signal_all(const std::vector<Child>& children, int sig, bool running_only) {
  for (const Child& c : children)
    if (c.pid > 0 && (c.running || !running_only)) ::kill(-c.pid, sig);
}

}  // namespace

int cmd_launch(const Args& args) {
  // Everything after the first "--" is the command; launch's own options come before it.
  auto dash = std::find(args.begin(), args.end(), std::string("--"));
  const Args own(args.begin(), dash);
  std::vector<std::string> command(dash == args.end() ? dash : dash + 1, args.end());

  int64_t nproc = 0, master_port = 0;
  ArgParser p("launch",
              "Run N ranks of a command on this machine: evax launch --nproc N [--master-port P]\n"
              "-- <command> [args...]. Each rank gets RANK, LOCAL_RANK, WORLD_SIZE,\n"
              "LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT (as torchrun sets them).\n"
              "A command that is not on PATH and has no '/' is an evax subcommand. If a rank\n"
              "fails, the others get SIGTERM, then SIGKILL after 5 s; launch exits with the\n"
              "first failing rank's code (1 for a signal), preferring a rank's own failure over\n"
              "the peer failures (code 4) it caused. SIGINT is forwarded (a second one kills\n"
              "the ranks). SIGTERM and SIGUSR1 are forwarded, every time, without a deadline:\n"
              "training ranks finish their step, checkpoint and exit with 6 (preempted), which\n"
              "launch then returns.");
  p.option("--nproc", &nproc, "N", "number of ranks").required();
  p.option("--master-port", &master_port, "P", "rendezvous port (0: pick a free one)");
  if (!p.parse(own)) return 0;
  if (dash == args.end() || command.empty())
    raise<UsageError>("evax launch: missing `-- <command> [args...]` (see `evax launch --help`)");
  if (nproc < 1 || nproc > 1024)
    raise<UsageError>("evax launch: --nproc must be in [1, 1024], got ", nproc);
  if (master_port < 0 || master_port > 65535)
    raise<UsageError>("evax launch: --master-port must be in [0, 65535], got ", master_port);
  const int port = master_port > 0 ? static_cast<int>(master_port) : pick_free_port();

  // An evax subcommand ("train") runs this very binary.
  std::string exe = command[0];
  std::vector<std::string> argv = command;
  if (exe.find('/') == std::string::npos && !on_path(exe)) {
    exe = self_exe();
    argv.insert(argv.begin(), "evax");
  }

  std::vector<std::string> common = {"WORLD_SIZE=" + std::to_string(nproc),
                                     "LOCAL_WORLD_SIZE=" + std::to_string(nproc),
                                     "MASTER_ADDR=127.0.0.1",
                                     "MASTER_PORT=" + std::to_string(port)};
  // As torchrun does: N ranks with a full-size thread pool each would oversubscribe the CPU.
  if (nproc > 1 && std::getenv("OMP_NUM_THREADS") == nullptr) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const auto threads = std::max<int64_t>(1, static_cast<int64_t>(cores) / nproc);
    common.push_back("OMP_NUM_THREADS=" + std::to_string(threads));
    log_info("launch: OMP_NUM_THREADS unset, using ", threads, " per rank");
  }
  std::string shown;
  for (const auto& a : command) shown += (shown.empty() ? "" : " ") + a;
  log_info("launch: ", nproc, nproc == 1 ? " rank" : " ranks", " of `", shown,
           "`, MASTER_PORT=", port);

  // Everything the children need is built before fork(): between fork and exec only
  // async-signal-safe calls are allowed.
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(nproc));
  std::vector<std::vector<char*>> env_ptrs(envs.size());
  for (size_t r = 0; r < envs.size(); ++r) {
    auto extra = common;
    extra.push_back("RANK=" + std::to_string(r));
    extra.push_back("LOCAL_RANK=" + std::to_string(r));
    envs[r] = child_environment(extra);
    env_ptrs[r] = c_strings(envs[r]);
  }
  std::vector<char*> argv_ptrs = c_strings(argv);
  const std::string exec_fail = "evax launch: cannot run '" + command[0] + "': ";

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {}, old_usr1 {};
  g_int_count = g_term_count = g_usr1_count = 0;
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  ::sigaction(SIGUSR1, &sa, &old_usr1);

  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  std::vector<Child> children(envs.size());
  for (size_t r = 0; r < envs.size(); ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      signal_all(children, SIGKILL, true);
      while (::wait(nullptr) > 0) {
      }
      raise<DataError>("evax launch: fork(): ", std::strerror(err));
    }
    if (pid == 0) {
      // Own process group (launch signals the rank and its descendants together); die with
      // launch even if it is SIGKILLed.
      ::setpgid(0, 0);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::signal(SIGUSR1, SIG_DFL);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
      ::execvpe(exe.c_str(), argv_ptrs.data(), env_ptrs[r].data());
      const char* why = ::strerror(errno);
      (void)!::write(2, exec_fail.data(), exec_fail.size());
      (void)!::write(2, why, std::strlen(why));
      (void)!::write(2, "\n", 1);
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: no race with the first kill(-pid)
    children[r] = Child{static_cast<int>(r), pid, true};
  }

  using Clock = std::chrono::steady_clock;
  int exit_code = 0, failed_rank = -1, forwarded = 0, running = static_cast<int>(children.size());
  int term_seen = 0, usr1_seen = 0, preempt_sig = 0;
  bool stopping = false, killed = false, preempted = false;
  const int preempted_code = static_cast<int>(kExitPreempted);
  Clock::time_point deadline;
  auto stop = [&](int sig) {
    signal_all(children, sig, true);
    if (!stopping) deadline = Clock::now() + std::chrono::milliseconds(
                                                 static_cast<int64_t>(kGraceSeconds * 1000));
    stopping = true;
  };
  while (running > 0) {
    for (Child& c : children) {
      if (!c.running) continue;
      int status = 0;
      const pid_t got = ::waitpid(c.pid, &status, WNOHANG);
      if (got == 0 || (got < 0 && errno == EINTR)) continue;
      c.running = false;
      --running;
      const bool ok = got == c.pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
      // A preempted rank checkpointed with its peers (they agree on the step): not a failure.
      if (got == c.pid && WIFEXITED(status) && WEXITSTATUS(status) == preempted_code && !stopping) {
        preempted = true;
        log_info("launch: rank ", c.rank, " was preempted (exit code ", preempted_code, ")");
        continue;
      }
      // A rank that dies makes its peers fail with kDist, and a peer may be seen first: a rank
      // that exited with another code on its own (the others die by launch's signal) is the cause.
      const int peer_failure = static_cast<int>(ExitCode::kDist);
      if (!ok && stopping && exit_code == peer_failure && WIFEXITED(status) &&
          WEXITSTATUS(status) != peer_failure) {
        failed_rank = c.rank;
        exit_code = WEXITSTATUS(status);
        log_error("launch: rank ", c.rank, " ", describe_status(status), " (the cause)");
        continue;
      }
      if (ok || stopping) {
        if (!ok) log_debug("launch: rank ", c.rank, " ", describe_status(status));
        continue;
      }
      failed_rank = c.rank;
      exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
      // A rank the forwarded preemption signal killed (it was not training yet): as a shell would.
      if (preempt_sig && WIFSIGNALED(status) && WTERMSIG(status) == preempt_sig)
        exit_code = 128 + preempt_sig;
      log_error("launch: rank ", c.rank, " ", describe_status(status),
                running > 0 ? "; stopping the other ranks" : "");
      stop(SIGTERM);
    }
    // Preemption requests go to every running rank each time (a rank that is checkpointing only
    // counts them), with no SIGKILL deadline: the ranks stop at the next step boundary.
    for (auto [sig, count, seen] : {std::tuple<int, int, int*>{SIGTERM, g_term_count, &term_seen},
                                    std::tuple<int, int, int*>{SIGUSR1, g_usr1_count, &usr1_seen}}) {
      if (count <= *seen) continue;
      if (*seen == 0)
        log_warn("launch: got ", signal_name(sig), ", forwarding it (the ranks checkpoint and exit)");
      else
        log_debug("launch: got ", signal_name(sig), " again, forwarding it");
      *seen = count;
      preempt_sig = sig;
      signal_all(children, sig, true);
    }
    if (g_int_count > forwarded) {
      const int sig = SIGINT;
      // A second Ctrl-C does not wait for the grace period.
      const bool again = forwarded > 0;
      forwarded = g_int_count;
      if (exit_code == 0) exit_code = 128 + sig;
      log_warn("launch: got signal ", sig, again ? ", killing the ranks" : ", forwarding it");
      if (again) {
        signal_all(children, SIGKILL, true);
        killed = true;
      } else {
        stop(sig);
      }
    }
    if (stopping && !killed && running > 0 && Clock::now() >= deadline) {
      log_warn("launch: ", running, running == 1 ? " rank" : " ranks", " still running after ",
               kGraceSeconds, " s, sending SIGKILL");
      signal_all(children, SIGKILL, true);
      killed = true;
    }
    if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // After a failure nothing a rank started may outlive the job (it could hold the port or a GPU).
  if (stopping) signal_all(children, SIGKILL, false);
  ::sigaction(SIGINT, &old_int, nullptr);
  // After a preemption request the handlers stay (they only count): more of them may follow
  // while launch exits, and must not turn its exit code 6 into death by a signal.
  if (preempt_sig == 0) {
    ::sigaction(SIGTERM, &old_term, nullptr);
    ::sigaction(SIGUSR1, &old_usr1, nullptr);
  }
  if (failed_rank >= 0) log_error("launch: failed (first failure: rank ", failed_rank, ")");
  if (exit_code == 0 && preempted) {
    log_warn("launch: preempted; continue with --resume auto");
    return preempted_code;
  }
  return exit_code;
}

}  // namespace evax::app
