#include <catch2/catch.hpp>

#include <filesystem>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/core/progress.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("atomic writes replace content and leave no temporary files") {
  evax::test::TempDir tmp("files");
  const std::string p = tmp / "a.txt";
  evax::write_file_atomic(p, "one");
  evax::write_file_atomic(p, "two two");
  CHECK(evax::read_file(p) == "two two");
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(tmp.str())) (void)e, ++n;
  CHECK(n == 1);
  CHECK_THROWS_AS(evax::write_file_atomic(tmp / "no/such/dir/x", "x"), evax::DataError);
  CHECK_THROWS_AS(evax::read_file(tmp / "missing"), evax::DataError);
}

TEST_CASE("run directories: explicit, or runs/<config>-<timestamp>") {
  evax::test::TempDir tmp("rundir");
  CHECK(evax::make_run_dir(tmp / "x/y", "cfg") == tmp / "x/y");
  CHECK(std::filesystem::is_directory(tmp / "x/y"));
  auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(tmp.str());
  std::string d = evax::make_run_dir("", "demo");
  std::filesystem::current_path(cwd);
  CHECK_THAT(d, StartsWith("runs/demo-"));
  CHECK(d.size() == std::string("runs/demo-20261129-020500").size());
}

TEST_CASE("progress lines show count, percentage, rate and ETA") {
  evax::ProgressOptions o;
  o.silent = true;
  o.unit = "img";
  evax::Progress p("synth", 200, o);
  p.advance(50);
  std::string line = p.status_line();
  CHECK_THAT(line, StartsWith("synth 50/200 (25%)") && Contains("img/s") && Contains("ETA"));
  p.set(200);
  CHECK_THAT(p.status_line(), Contains("200/200 (100%)") && Contains("elapsed"));
}

TEST_CASE("durations format as m:ss or h:mm:ss") {
  CHECK(evax::format_duration(5) == "0:05");
  CHECK(evax::format_duration(125) == "2:05");
  CHECK(evax::format_duration(3723) == "1:02:03");
  CHECK(evax::format_duration(-1) == "?");
}
