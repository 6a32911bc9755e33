// The records a training command leaves for its report: config_origins.json, environment.json,
// status.json, and report.html at the end (also when the run stops on an error); and the `paper:`
// section of the paper-reproduction configs, decoded with the other keys.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "cli_util.h"
#include "evax/core/files.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {

struct Cli {
  int code;
  std::string err;
};
Cli evax_run(const std::string& args, const std::string& dir) {
  const std::string err = dir + ".err";
  Cli r;
  r.code = test::shell("'" + test::evax_bin() + "' " + args + " >/dev/null 2>'" + err + "'");
  r.err = fs::exists(err) ? read_file(err) : "";
  return r;
}

const std::string kTeacher =
    " --set model.depth=1 --set data.img_size=64 --set data.loader.batch_size=4"
    " --set data.loader.workers=0 --set train.epochs=1 --set train.warmup_epochs=0 --set threads=1";

}  // namespace

TEST_CASE("a training run records its origins, environment and state and ends with report.html") {
  test::TempDir tmp("runend");
  const std::string data = test::synth_dataset("report_synth16", "--n 16 --size 64 --seed 3");
  const std::string cfg = test::source_path("configs/pretrain/demo_teacher.yaml");
  const std::string dir = tmp / "teacher";
  Cli r = evax_run("teacher --config '" + cfg + "' --run-dir '" + dir + "' --set data.manifest='" +
                       data + "/findings.csv'" + kTeacher,
                   dir);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const json status = json::parse(read_file(dir + "/status.json"));
  CHECK(status["state"] == "finished");
  CHECK(status.contains("ended"));
  const json origins = json::parse(read_file(dir + "/config_origins.json"));
  CHECK(origins["model/depth"] == "--set model.depth=1");
  CHECK(origins["model/name"] == cfg + ":6");
  const json env = json::parse(read_file(dir + "/environment.json"));
  CHECK(env["ranks"]["world_size"] == 1);
  CHECK(env["threads"]["intra_op"] == 1);  // the thread policy the run trained with
  CHECK(env["libtorch"].get<std::string>().size() >= 3);
  CHECK(env["evax"]["commit"].get<std::string>() != "");
  CHECK_THAT(env["command"].get<std::string>(), Contains("teacher --config"));
  // Every key the teacher command reads, with its default (null: required).
  const json defaults = json::parse(read_file(dir + "/config_defaults.json"));
  CHECK(defaults["model/depth"] == "0");
  CHECK(defaults["loss/pos_weight"] == "1.0");
  CHECK(defaults["data/manifest"].is_null());
  CHECK(defaults.contains("optimizer/lr"));
  const std::string html = read_file(dir + "/report.html");
  CHECK_THAT(html, Contains("<span class=\"badge finished\">finished</span>") &&
                       Contains("--set model.depth=1") && Contains("dense teacher") &&
                       Contains("aria-label=\"loss\""));
  // The value that differs from its default is marked, with the default beside it.
  CHECK_THAT(html, Contains("<tr class=\"headline\"><td><code>model.depth</code></td><td><code>1"
                            "</code></td><td><code>0</code></td><td>--set model.depth=1</td></tr>"));
  CHECK_THAT(html, Contains("Keys at their defaults ("));
}

TEST_CASE("a run that stops on an error is marked stopped, with the error, in its report") {
  test::TempDir tmp("runend");
  const std::string dir = tmp / "teacher";
  Cli r = evax_run("teacher --config '" + test::source_path("configs/pretrain/demo_teacher.yaml") +
                       "' --run-dir '" + dir + "' --set data.manifest='" + (tmp / "none.csv") +
                       "'" + kTeacher,
                   dir);
  CHECK(r.code == 3);
  const json status = json::parse(read_file(dir + "/status.json"));
  CHECK(status["state"] == "stopped");
  CHECK_THAT(status["message"].get<std::string>(), Contains("none.csv"));
  CHECK_THAT(read_file(dir + "/report.html"),
             Contains("<span class=\"badge stopped\">stopped</span>") && Contains("none.csv"));
}

TEST_CASE("paper sections: decoded with the other keys, a typo inside one is an error") {
  test::TempDir tmp("paper");
  const std::string manifest = " --set data.manifest='" + (tmp / "none.csv") + "'";
  // Each paper config decodes (the run gets as far as reading the missing manifest: exit 3).
  for (const char* c : {"classify/cxr14_eva_x_s.yaml", "classify/covidx3_eva_x_s_pct1.yaml",
                        "classify/covidx3_eva_x_s_pct10.yaml", "segment/lung_eva_x_s.yaml",
                        "segment/shenzhen_eva_x_s.yaml"}) {
    const std::string cmd = std::string(c).rfind("segment", 0) == 0 ? "segment" : "finetune";
    const std::string dir = tmp / ("ok-" + fs::path(c).stem().string());
    Cli r = evax_run(cmd + " --config '" + test::source_path(std::string("configs/") + c) +
                         "' --run-dir '" + dir + "'" + manifest,
                     dir);
    INFO(c << ": " << r.err);
    CHECK(r.code == 3);
    CHECK_THAT(r.err, Contains("none.csv"));
  }
  const std::string cfg = " --config '" + test::source_path("configs/classify/cxr14_eva_x_s.yaml") + "'";
  Cli r = evax_run("finetune" + cfg + " --run-dir '" + (tmp / "t1") + "'" + manifest +
                       " --set paper.valeu=83",
                   tmp / "t1");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("unknown key `paper.valeu` (did you mean `paper.value`?)"));
  r = evax_run("finetune" + cfg + " --run-dir '" + (tmp / "t2") + "'" + manifest +
                   " --set paper.value=0.833e3",
               tmp / "t2");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("`paper.value` = 0.833e3: must be the paper's number in percent"));
  // A section without its source is incomplete.
  r = evax_run("finetune" + cfg + " --run-dir '" + (tmp / "t3") + "'" + manifest +
                   " --set paper.source=''",
               tmp / "t3");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("`paper.source`"));
}
