// evax launch and preemption: SIGTERM and SIGUSR1 reach every rank each time they arrive, with no
// SIGKILL deadline (the ranks checkpoint first), and the ranks' exit code 6 is launch's.
#include <catch2/catch.hpp>

#include <signal.h>

#include "train/run_util.h"

using namespace evax;
using namespace evax::test;

namespace {

// Waits until each of `n` ranks has written <dir>/ready<RANK>.
void wait_ready(const TempDir& tmp, int n) {
  for (int i = 0; i < 1000; ++i) {
    int ready = 0;
    for (int r = 0; r < n; ++r) ready += std::filesystem::exists(tmp / ("ready" + std::to_string(r)));
    if (ready == n) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("the ranks did not start");
}

}  // namespace

TEST_CASE("launch: SIGTERM and SIGUSR1 are forwarded every time, without a kill deadline, and exit code 6 is returned") {
  TempDir tmp("launch_preempt");
  // Each rank counts the signals it gets, and after the second one takes 6 s (longer than
  // launch's 5 s grace for failures) before exiting with 6, as a rank writing a checkpoint would.
  const std::string rank_script =
      "n=0; trap 'n=$((n+1)); echo $RANK $n >> " + (tmp / "got") + "' USR1 TERM; "
      "touch " + (tmp / "ready") + "$RANK; "
      "while [ $n -lt 2 ]; do sleep 0.05; done; sleep 6; exit 6";
  Proc p = spawn({evax_bin(), "launch", "--nproc", "2", "--", "sh", "-c", rank_script},
                 tmp / "launch.log");
  wait_ready(tmp, 2);
  ::kill(p.pid, SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(p.pid, SIGUSR1);
  const auto t0 = std::chrono::steady_clock::now();
  const int code = wait_exit(p, 60);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(read_file(tmp / "launch.log"));
  CHECK(code == 6);
  CHECK(secs >= 5.5);  // not cut short by a SIGKILL
  std::ifstream got(tmp / "got");
  std::vector<std::string> lines;
  for (std::string l; std::getline(got, l);) lines.push_back(l);
  std::sort(lines.begin(), lines.end());
  CHECK(lines == std::vector<std::string>{"0 1", "0 2", "1 1", "1 2"});
}

TEST_CASE("launch: ranks that a forwarded SIGTERM kills (not yet training) give 128 + 15, one that exits 6 alone gives 6") {
  TempDir tmp("launch_preempt_kill");
  Proc p = spawn({evax_bin(), "launch", "--nproc", "2", "--", "sh", "-c",
                  "touch " + (tmp / "ready") + "$RANK; while true; do sleep 0.05; done"},
                 tmp / "launch.log");
  wait_ready(tmp, 2);
  ::kill(p.pid, SIGTERM);
  CHECK(wait_exit(p, 30) == 128 + SIGTERM);
  // Rank 1 exits 6 on its own (a SIGUSR1 sent to it alone), rank 0 finishes normally.
  p = spawn({evax_bin(), "launch", "--nproc", "2", "--", "sh", "-c",
             "if [ $RANK = 1 ]; then exit 6; fi; sleep 0.5"},
            tmp / "launch2.log");
  CHECK(wait_exit(p, 30) == 6);
}
