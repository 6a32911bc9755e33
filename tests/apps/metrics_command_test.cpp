// `evax metrics` end to end: the JSON it writes and its exit codes.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "evax/core/files.h"
#include "cli_util.h"
#include "test_util.h"

using Catch::Matchers::Contains;

namespace {

struct Result {
  int code = -1;
  std::string err;
};

Result run_metrics(const std::string& args, const evax::test::TempDir& tmp) {
  const std::string cmd =
      "'" + evax::test::evax_bin() + "' metrics " + args + " >/dev/null 2>'" + (tmp / "err") + "'";
  const int code = evax::test::shell(cmd);
  return {code, evax::read_file(tmp / "err")};
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

TEST_CASE("evax metrics writes AUC, mAUC, rates and multi-class results as JSON") {
  evax::test::TempDir tmp("metrics-cmd");
  const std::string p = tmp / "p.csv", t = tmp / "t.csv", m = tmp / "m.json";
  // B's known labels are all 0: AUC null with a warning, left out of mAUC.
  write(p, "id,A,B\n1,0.9,0.2\n2,0.4,0.7\n3,0.6,0.1\n4,0.3,0.5\n");
  write(t, "id,A,B\n4,0,0\n3,1,0\n2,0,\n1,1,0\n");
  Result r = run_metrics(
      "--task multilabel --pred '" + p + "' --target '" + t + "' --out '" + m + "'", tmp);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.err, Contains("class 'B'"));
  auto j = nlohmann::json::parse(evax::read_file(m));
  CHECK(j["auc"]["A"] == 1.0);
  CHECK(j["auc"]["B"].is_null());
  CHECK(j["mauc"] == 1.0);
  CHECK(j["threshold"] == 0.5);
  CHECK(j["sensitivity"]["A"] == 1.0);
  CHECK(j["sensitivity"]["B"].is_null());
  CHECK(j["specificity"]["B"].get<double>() == Approx(2.0 / 3));
  CHECK(j["ppv"]["B"] == 0.0);
  CHECK(j["f1"]["A"] == 1.0);
  CHECK(j["counts"]["B"] == nlohmann::json{{"tp", 0}, {"fp", 1}, {"tn", 2}, {"fn", 0}});
  REQUIRE(j["warnings"].size() == 1);
  CHECK(j["samples"] == 4);

  write(p, "id,normal,covid\na,0.8,0.2\nb,0.3,0.7\nc,0.6,0.4\n");
  write(t, "id,normal,covid\na,1,0\nb,0,1\nc,0,1\n");
  r = run_metrics("--task multiclass --pred '" + p + "' --target '" + t + "' --out '" + m + "'",
                  tmp);
  REQUIRE(r.code == 0);
  j = nlohmann::json::parse(evax::read_file(m));
  CHECK(j["accuracy"].get<double>() == Approx(2.0 / 3));
  CHECK(j["confusion"] == nlohmann::json{{1, 0}, {1, 1}});
  CHECK(j["per_class_recall"]["covid"] == 0.5);
  CHECK(j["auc"]["normal"] == 1.0);
  CHECK(j["mauc"] == 1.0);
}

TEST_CASE("evax metrics errors: unmatched id and bad cell exit 3, bad flags exit 2") {
  evax::test::TempDir tmp("metrics-cmd-err");
  const std::string p = tmp / "p.csv", t = tmp / "t.csv", m = tmp / "m.json";
  write(p, "id,A\nx,0.9\ny,0.1\n");
  write(t, "id,A\nx,1\n");
  const std::string files = " --pred '" + p + "' --target '" + t + "' --out '" + m + "'";
  Result r = run_metrics("--task multilabel" + files, tmp);
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Contains("id 'y'") && Contains("no row in"));
  write(t, "id,A\nx,1\ny,yes\n");
  r = run_metrics("--task multilabel" + files, tmp);
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Contains("t.csv:3: column 'A'"));
  r = run_metrics("--task regression" + files, tmp);
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("--task must be multilabel or multiclass"));
  r = run_metrics("--task multilabel --pred '" + p + "'", tmp);
  CHECK(r.code == 2);
  CHECK_FALSE(evax::read_file(tmp / "err").empty());
}
