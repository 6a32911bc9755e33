// evax launch: environment of the ranks, exit-code propagation, stopping the other ranks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cli_util.h"
#include "test_util.h"

using Catch::Matchers::Contains;

namespace {

struct Result {
  int code = -1;
  std::string out;
  double seconds = 0;
};

/// Runs `evax launch <args>` with stdout captured (stderr, the launcher's log, discarded).
Result launch(const std::string& args) {
  evax::test::TempDir tmp("launch");
  const std::string cmd =
      evax::test::evax_bin() + " launch " + args + " >'" + (tmp / "out") + "' 2>/dev/null";
  const auto t0 = std::chrono::steady_clock::now();
  Result r;
  r.code = evax::test::shell(cmd);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ifstream f(tmp / "out");
  std::stringstream ss;
  ss << f.rdbuf();
  r.out = ss.str();
  return r;
}

std::vector<std::string> sorted_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::sort(lines.begin(), lines.end());
  return lines;
}

}  // namespace

TEST_CASE("launch: every rank gets its torchrun environment") {
  Result r = launch(
      "--nproc 3 --master-port 29999 -- sh -c "
      "'echo $RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT'");
  REQUIRE(r.code == 0);
  CHECK(sorted_lines(r.out) == std::vector<std::string>{"0 0 3 3 127.0.0.1 29999",
                                                        "1 1 3 3 127.0.0.1 29999",
                                                        "2 2 3 3 127.0.0.1 29999"});
  // Without --master-port a free port is picked.
  r = launch("--nproc 2 -- sh -c 'echo $MASTER_PORT'");
  REQUIRE(r.code == 0);
  auto ports = sorted_lines(r.out);
  REQUIRE(ports.size() == 2);
  CHECK(ports[0] == ports[1]);
  CHECK(std::stoi(ports[0]) > 0);
}

TEST_CASE("launch: a failing rank's exit code is returned and the others are stopped") {
  Result r = launch("--nproc 2 -- sh -c 'if [ $RANK = 1 ]; then exit 7; fi; sleep 30'");
  CHECK(r.code == 7);
  CHECK(r.seconds < 6);
  // A rank that ignores SIGTERM is killed after the 5 s grace period.
  // (rank 0 fails only once rank 1 has had time to install its trap)
  r = launch("--nproc 2 -- sh -c 'trap \"\" TERM; "
             "if [ $RANK = 0 ]; then sleep 0.5; exit 3; fi; sleep 30'");
  CHECK(r.code == 3);
  CHECK(r.seconds >= 5);
  CHECK(r.seconds < 9);
  // Death by a signal is exit code 1.
  r = launch("--nproc 2 -- sh -c 'if [ $RANK = 1 ]; then kill -KILL $$; fi; sleep 30'");
  CHECK(r.code == 1);
  CHECK(r.seconds < 6);
}

TEST_CASE("launch: evax subcommands and usage errors") {
  // "launch" is not on PATH: it runs this evax binary.
  Result r = launch("--nproc 1 -- launch --help");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("usage: evax launch"));
  CHECK(launch("--nproc 2").code == 2);
  CHECK(launch("--nproc 0 -- true").code == 2);
  CHECK(launch("--nproc 1 -- /nonexistent/program").code == 127);
}
