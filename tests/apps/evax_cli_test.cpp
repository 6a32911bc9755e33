// End-to-end checks of the `evax` binary: help, exit codes, one-line errors, run directories.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "evax/core/files.h"
#include "test_util.h"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs the evax binary with `args` (shell-quoted by the caller), capturing stdout and stderr.
Result run(const std::string& args, const std::string& cwd = "") {
  const char* bin = std::getenv("EVAX_BIN");
  REQUIRE(bin != nullptr);
  evax::test::TempDir tmp("cli");
  std::string cmd = (cwd.empty() ? "" : "cd '" + cwd + "' && ") + "'" + bin + "' " + args + " >'" +
                    (tmp / "out") + "' 2>'" + (tmp / "err") + "'";
  int st = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = evax::read_file(tmp / "out");
  r.err = evax::read_file(tmp / "err");
  return r;
}

size_t lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST_CASE("evax --help lists the real commands") {
  Result r = run("--help");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("demo") && Contains("synth") && Contains("exit codes"));
  CHECK(run("").code == 2);
}

TEST_CASE("unknown command and bad options exit 2 with one line") {
  Result r = run("bogus");
  CHECK(r.code == 2);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err, Contains("unknown command 'bogus'"));
  r = run("synth");
  CHECK(r.code == 2);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err, Contains("missing required option --out"));
  r = run("synth --out x --n abc");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("--n expects an integer"));
  r = run("synth --out x --size 100");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("multiple of 16"));
}

TEST_CASE("evax synth --help shows its options") {
  Result r = run("synth --help");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("--out DIR") && Contains("--n N") && Contains("--size S") &&
                        Contains("--seed K"));
}

TEST_CASE("config errors exit 2 and name the key") {
  evax::test::TempDir tmp("cfgerr");
  Result r = run("demo --config '" + (tmp / "none.yaml") + "'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("cannot read config file"));
  r = run("demo --run-dir '" + (tmp / "r1") + "' --set synth.nn=5");
  CHECK(r.code == 2);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err, Contains("unknown key `synth.nn`") && Contains("did you mean `synth.n`"));
  CHECK_FALSE(fs::exists(tmp / "r1"));  // rejected before the run directory exists
  r = run("demo --run-dir '" + (tmp / "r2") + "' --set synth.size=100");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("`synth.size` = 100") && Contains("multiple of 16"));
  r = run("demo --run-dir '" + (tmp / "r3") + "' --set synth.prevalence.Nodule=abc");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("expected a number") && Contains("'abc'"));
}

TEST_CASE("data errors exit 3") {
  evax::test::TempDir tmp("dataerr");
  evax::write_file_atomic(tmp / "file", "x");
  Result r = run("synth --n 2 --size 64 --out '" + (tmp / "file") + "/sub'");
  CHECK(r.code == 3);
  CHECK(lines(r.err) == 1);
}

TEST_CASE("demo writes a run directory that can be repeated from its config.yaml") {
  evax::test::TempDir tmp("demo");
  const std::string small = " --set synth.n=24 --set synth.size=64 --set data.loader.batch_size=4"
                            " --set train.epochs=1 --set model.depth=1 --set threads=1";
  Result r = run("demo --run-dir '" + (tmp / "run1") + "'" + small);
  INFO(r.err);
  REQUIRE(r.code == 0);
  for (const char* f : {"config.yaml", "log.txt", "data/classification.csv", "data/pretrain.csv",
                        "metrics.csv"})
    CHECK(fs::exists(tmp / ("run1/" + std::string(f))));
  CHECK_THAT(evax::read_file(tmp / "run1/log.txt"),
             Contains("wrote 24 images") && Contains("pretraining done"));
  CHECK_THAT(evax::read_file(tmp / "run1/config.yaml"), Contains("n: 24"));
  CHECK(fs::exists(tmp / "run1/metrics.csv"));

  r = run("demo --config '" + (tmp / "run1/config.yaml") + "' --run-dir '" + (tmp / "run2") + "'");
  INFO(r.err);
  REQUIRE(r.code == 0);
  // Identical but for the data path, which the demo points into each run directory.
  auto without_manifest = [](std::string s) {
    auto p = s.find("manifest:");
    return s.erase(p, s.find('\n', p) - p);
  };
  CHECK(without_manifest(evax::read_file(tmp / "run2/config.yaml")) ==
        without_manifest(evax::read_file(tmp / "run1/config.yaml")));
  CHECK(evax::read_file(tmp / "run2/data/classification.csv") ==
        evax::read_file(tmp / "run1/data/classification.csv"));
}

TEST_CASE("demo without --run-dir uses runs/<config>-<timestamp>") {
  evax::test::TempDir tmp("demodefault");
  Result r = run("demo --set synth.n=24 --set synth.size=64 --set data.loader.batch_size=4"
                 " --set train.epochs=1 --set model.depth=1 --set threads=1", tmp.str());
  INFO(r.err);
  REQUIRE(r.code == 0);
  int found = 0;
  for (auto& e : fs::directory_iterator(tmp / "runs"))
    found += e.path().filename().string().rfind("demo-", 0) == 0;
  CHECK(found == 1);
}
