// Preemption of distributed training: SIGTERM/SIGUSR1 at random (seeded, printed) steps of a
// 2-rank `evax launch` run make every rank stop after the same step, checkpoint and exit with 6;
// `--resume auto` then ends bit-identical to an uninterrupted run, also when a burst of further
// signals arrives while the checkpoint is written.
#include <catch2/catch.hpp>

#include <signal.h>

#include <random>
#include <regex>

#include "evax/train/run_checkpoint.h"
#include "run_util.h"
#include "tensor_util.h"

using namespace evax;
using namespace evax::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

constexpr int kPreempted = 6;  // the documented exit code (evax --help)

// `evax launch --nproc 2 -- pretrain ...`: 2 gloo ranks of 4 images each.
std::vector<std::string> launch_pretrain(const std::string& cfg, const std::string& run,
                                         bool resume) {
  std::vector<std::string> a = {evax_bin(), "launch",   "--nproc", "2",     "--",
                                "pretrain", "--config", cfg,       "--run-dir", run,
                                "--set",    "data.loader.batch_size=4",
                                "--set",    "dist.backend=gloo"};
  if (resume) a.insert(a.end(), {"--resume", "auto"});
  return a;
}

// Rank r's pid among launch's children (their RANK variable).
pid_t rank_pid(pid_t launch, int r) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    for (pid_t c : child_pids(launch))
      if (env_of(c, "RANK") == std::to_string(r)) return c;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("no child of launch with RANK=" << r);
  return -1;
}

// "N signals received on this rank" of the preemption log line (0 when absent).
int signals_logged(const std::string& log) {
  std::smatch m;
  static const std::regex re("\\((\\d+) signals? received on this rank\\)");
  return std::regex_search(log, m, re) ? std::stoi(m[1]) : 0;
}

std::string meta_why(const std::string& ckpt) {
  return nlohmann::json::parse(read_file(ckpt + "/meta.json")).value("why", "");
}

}  // namespace

TEST_CASE("preemption: SIGTERM to launch, then SIGUSR1 to one rank, at random steps: the resumed run ends bit-identical") {
  std::mt19937_64 rng(test_seed("preemption SIGTERM/SIGUSR1"));
  const int64_t s1 = std::uniform_int_distribution<int64_t>(1, 16)(rng);
  const int64_t s2 = std::uniform_int_distribution<int64_t>(1, 12)(rng);
  INFO("signals once rank 0 logged step " << s1 << ", then " << s2 << " steps after the resume");
  TempDir tmp("preempt");
  // 48 images, global batch 8: 6 steps an epoch, 48 in all (about 4 s on two idle cores).
  const std::string cfg = tiny_pretrain_config(tmp, "train: {epochs: 8, warmup_epochs: 0.5, log_every: 1}\n");
  const std::string ref = tmp / "ref", run = tmp / "run";
  {
    const int rc = wait_exit(spawn(launch_pretrain(cfg, ref, false), tmp / "ref.log"));
    INFO(read_file(tmp / "ref.log"));
    REQUIRE(rc == 0);
  }

  // SIGTERM to the launcher, which forwards it to both ranks.
  Proc p = spawn(launch_pretrain(cfg, run, false), tmp / "a.log");
  int code = -1;
  {
    const bool reached = wait_for_step(p, run, s1, &code);
    INFO("not reached; exit code " << code << ": " << read_file(p.log));
    REQUIRE(reached);
  }
  ::kill(p.pid, SIGTERM);
  code = wait_exit(p);
  INFO(read_file(tmp / "a.log"));
  REQUIRE(code == kPreempted);
  const std::string ck1 = newest_checkpoint(run);
  const int64_t stop1 = checkpoint_step(ck1);
  CHECK(stop1 >= s1);
  CHECK(stop1 < 48);
  CHECK((meta_why(ck1) == "preempted" || meta_why(ck1) == "epoch end"));
  CHECK_THAT(read_file(run + "/log.txt"),
             Contains("preempted by SIGTERM after step " + std::to_string(stop1)));
  CHECK_THAT(read_file(tmp / "a.log"), Contains("[rank 1] preempted by SIGTERM after step " +
                                                std::to_string(stop1)));

  // SIGUSR1 to rank 1 alone: rank 0 learns of it through the step's all-reduce and stops after
  // the same step; launch passes the ranks' exit code on.
  p = spawn(launch_pretrain(cfg, run, true), tmp / "b.log");
  {
    const bool reached = wait_for_step(p, run, stop1 + s2, &code);
    INFO("not reached; exit code " << code << ": " << read_file(p.log));
    REQUIRE(reached);
  }
  ::kill(rank_pid(p.pid, 1), SIGUSR1);
  code = wait_exit(p);
  INFO(read_file(tmp / "b.log"));
  REQUIRE(code == kPreempted);
  const int64_t stop2 = checkpoint_step(newest_checkpoint(run));
  CHECK(stop2 >= stop1 + s2);
  CHECK(stop2 < 48);
  const std::string log = read_file(run + "/log.txt");
  CHECK_THAT(log, Contains("resumed from " + ck1));
  CHECK_THAT(log, Contains("preempted by a signal to another rank after step " +
                           std::to_string(stop2)));
  CHECK_THAT(read_file(tmp / "b.log"), Contains("[rank 1] preempted by SIGUSR1 after step " +
                                                std::to_string(stop2)));

  // To the end: the same weights, bit for bit, as the run that was never stopped.
  REQUIRE(wait_exit(spawn(launch_pretrain(cfg, run, true), tmp / "c.log")) == 0);
  CHECK(checkpoint_step(newest_checkpoint(run)) == 48);
  const double d = max_abs_diff(final_weights(ref), final_weights(run));
  INFO("max abs parameter difference: " << d);
  CHECK(d == 0.0);
}

TEST_CASE("preemption: a burst of signals while the checkpoint is written kills nothing and leaves a valid checkpoint") {
  std::mt19937_64 rng(test_seed("preemption burst"));
  const int64_t s = std::uniform_int_distribution<int64_t>(1, 10)(rng);
  INFO("first SIGTERM once rank 0 logged step " << s);
  TempDir tmp("preempt_burst");
  const std::string cfg = tiny_pretrain_config(tmp, "train: {epochs: 4, warmup_epochs: 0.5, log_every: 1}\n");
  const std::string ref = tmp / "ref", run = tmp / "run";
  {
    const int rc = wait_exit(spawn(launch_pretrain(cfg, ref, false), tmp / "ref.log"));
    INFO(read_file(tmp / "ref.log"));
    REQUIRE(rc == 0);
  }

  Proc p = spawn(launch_pretrain(cfg, run, false), tmp / "a.log");
  int code = -1;
  {
    const bool reached = wait_for_step(p, run, s, &code);
    INFO("not reached; exit code " << code << ": " << read_file(p.log));
    REQUIRE(reached);
  }
  const std::vector<pid_t> ranks = {rank_pid(p.pid, 0), rank_pid(p.pid, 1)};
  // SIGTERM, then SIGUSR1 and SIGTERM every millisecond to the launcher and to each rank until
  // the launcher is gone: the ranks finish the step, write the checkpoint meanwhile and exit.
  ::kill(p.pid, SIGTERM);
  int sent = 1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool done = false;
  while (!(done = exited(p, &code)) && std::chrono::steady_clock::now() < deadline) {
    const int sig = sent % 2 ? SIGUSR1 : SIGTERM;
    ::kill(p.pid, sig);
    for (pid_t r : ranks) ::kill(r, sig);
    ++sent;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!done) code = wait_exit(p, 1);
  const std::string log = read_file(run + "/log.txt");
  INFO(read_file(tmp / "a.log") << "\nsignal bursts sent: " << sent);
  REQUIRE(code == kPreempted);  // not 128 + a signal: neither launch nor a rank was killed
  const std::string ck = newest_checkpoint(run);
  CHECK_NOTHROW(run_checkpoint_load(ck));  // complete and matching its checksums
  CHECK(run_checkpoint_find_latest(run + "/checkpoints").value_or("") == ck);
  for (auto& e : fs::directory_iterator(run + "/checkpoints"))
    CHECK(e.path().filename().string().rfind(".tmp", 0) != 0);  // no half-written leftovers
  // Signals kept arriving on rank 0 between the first one and the end of the checkpoint.
  const int received = signals_logged(log);
  INFO("signals received on rank 0 before its preemption line: " << received);
  CHECK(received >= 2);

  REQUIRE(wait_exit(spawn(launch_pretrain(cfg, run, true), tmp / "b.log")) == 0);
  CHECK_THAT(read_file(run + "/log.txt"), Contains("resumed from " + ck));
  const double d = max_abs_diff(final_weights(ref), final_weights(run));
  INFO("max abs parameter difference: " << d);
  CHECK(d == 0.0);
}
