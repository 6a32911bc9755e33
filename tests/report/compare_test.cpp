// evax compare's table: headline metrics next to the paper's numbers and the difference, runs in
// progress marked, config differences, and run arguments given as glob patterns; and the
// `evax report` / `evax compare` commands end to end.
#include <catch2/catch.hpp>

#include <filesystem>

#include "cli_util.h"
#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/report/compare.h"
#include "report_fixture.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// Two finished runs and one in progress under <root>/runs.
void make_runs(const std::string& root) {
  // a: mAUC 0.85275587819785 against the paper's 82.4 → 85.28, +2.88.
  test::make_report_fixture(root + "/runs/a");
  // b: same, another lr, and no paper section.
  test::make_report_fixture(root + "/runs/b");
  write_file_atomic(root + "/runs/b/config.yaml",
                    "model:\n  name: eva_x_tiny_patch16\noptimizer:\n  lr: 0.002\ntrain:\n  epochs: 3\n");
  // c: in progress, no test metrics yet.
  fs::create_directories(root + "/runs/c");
  write_file_atomic(root + "/runs/c/config.yaml", "model:\n  name: eva_x_small_patch16\n");
  write_file_atomic(root + "/runs/c/metrics.csv", "step,loss\n10,0.5\n");
  run_status_write(root + "/runs/c", "running");
  fs::create_directories(root + "/runs/not_a_run");
}

}  // namespace

TEST_CASE("compare: headline vs paper, difference, in-progress runs and config differences") {
  test::TempDir tmp("compare");
  make_runs(tmp.str());
  std::vector<RunSummary> runs;
  for (const char* r : {"runs/a", "runs/b", "runs/c"}) runs.push_back(run_summary(tmp / r));
  CHECK(runs[0].paper.present);
  CHECK(runs[0].paper.value == 82.4);
  CHECK(runs[0].headline.metric == "mauc");
  CHECK(runs[0].headline.value == 0.85275587819785);
  CHECK(runs[2].status.state == "in progress");
  const CompareTables t = compare_runs(runs);
  CHECK_THAT(t.markdown, Contains("| " + (tmp / "runs/a") +
                                  " | finished | mauc | 85.28 | 82.40 | +2.88 | T | S |"));
  CHECK_THAT(t.markdown, Contains("| " + (tmp / "runs/b") + " | finished | mauc | 85.28 | - | - |"));
  CHECK_THAT(t.markdown, Contains("| " + (tmp / "runs/c") + " | in progress |  | - (in progress) |"));
  // Config differences: lr, the model and the paper section differ; epochs is absent from c.
  CHECK_THAT(t.markdown, Contains("| optimizer.lr | 0.001 | 0.002 | (absent) |"));
  CHECK_THAT(t.markdown, Contains("| model.name | eva_x_tiny_patch16 | eva_x_tiny_patch16 | eva_x_small_patch16 |"));
  CHECK_THAT(t.markdown, Contains("| paper.value | 82.4 | (absent) | (absent) |"));
  CHECK_THAT(t.markdown, Contains("| eval.test_split | test | (absent) | (absent) |"));
  CHECK_THAT(t.html, Contains("<tr class=\"in-progress\">"));
  CHECK_THAT(t.html, Contains("<td class=\"n\">+2.88</td>"));
  CHECK_THAT(t.html, !Contains("<script"));
}

TEST_CASE("compare: run arguments may be glob patterns, expanded here") {
  test::TempDir tmp("compare");
  make_runs(tmp.str());
  const auto runs = expand_run_args({tmp / "runs/*"});
  // Sorted, only run directories (not_a_run has neither config.yaml nor metrics.csv).
  CHECK(runs == std::vector<std::string>{tmp / "runs/a", tmp / "runs/b", tmp / "runs/c"});
  // A directory named twice (once by a pattern) counts once; [ab] matches two.
  CHECK(expand_run_args({tmp / "runs/a", tmp / "runs/[ab]"}) ==
        std::vector<std::string>{tmp / "runs/a", tmp / "runs/b"});
  CHECK_THROWS_AS(expand_run_args({tmp / "runs/z*"}), UsageError);
  CHECK_THROWS_AS(expand_run_args({tmp / "runs/missing"}), UsageError);
}

namespace {

struct Cli {
  int code;
  std::string out, err;
};
Cli run_evax(const std::string& args, const std::string& cwd) {
  const std::string cmd = "cd '" + cwd + "' && '" + test::evax_bin() + "' " + args +
                          " >out.txt 2>err.txt";
  Cli r;
  r.code = test::shell(cmd);
  r.out = read_file(cwd + "/out.txt");
  r.err = read_file(cwd + "/err.txt");
  return r;
}

}  // namespace

TEST_CASE("evax report and evax compare write their files, a quoted glob reaches compare") {
  test::TempDir tmp("comparecli");
  make_runs(tmp.str());
  Cli r = run_evax("report runs/a", tmp.str());
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out == "runs/a/report.html\n");
  CHECK_THAT(read_file(tmp / "runs/a/report.html"), Contains("evax run report: a") &&
                                                        Contains("by evax "));
  r = run_evax("report runs/a --out elsewhere.html", tmp.str());
  CHECK(r.code == 0);
  CHECK(fs::exists(tmp / "elsewhere.html"));
  // Quoted: the shell leaves the pattern to evax.
  r = run_evax("compare 'runs/*' --out table", tmp.str());
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("| runs/a | finished | mauc | 85.28 | 82.40 | +2.88 |") &&
                        Contains("| runs/c | in progress |"));
  CHECK(read_file(tmp / "table.md") + "\nwrote table.md and table.html\n" == r.out);
  CHECK_THAT(read_file(tmp / "table.html"), Contains("<table>"));
  r = run_evax("compare 'runs/q*'", tmp.str());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("`runs/q*` matches no run directory"));
  r = run_evax("report runs/missing", tmp.str());
  CHECK(r.code == 3);
}
