// End-to-end checks of the `evax` binary: help, exit codes, one-line errors, run directories.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "evax/core/files.h"
#include "cli_util.h"
#include "test_util.h"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs the evax binary with `args` (shell-quoted by the caller), capturing stdout and stderr;
// `env` ("A=1 B=2") is set for it.
Result run(const std::string& args, const std::string& cwd = "", const std::string& env = "") {
  evax::test::TempDir tmp("cli");
  std::string cmd = (cwd.empty() ? "" : "cd '" + cwd + "' && ") + env + " '" +
                    evax::test::evax_bin() + "' " + args + " >'" + (tmp / "out") + "' 2>'" +
                    (tmp / "err") + "'";
  Result r;
  r.code = evax::test::shell(cmd);
  r.out = evax::read_file(tmp / "out");
  r.err = evax::read_file(tmp / "err");
  return r;
}

// A TCP port nobody listens on now (the kernel's pick for port 0).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// The `loss` column of a metrics.csv's first row.
std::string first_loss(const std::string& metrics_csv) {
  std::istringstream in(evax::read_file(metrics_csv));
  std::string header, row, h, v;
  std::getline(in, header);
  std::getline(in, row);
  std::istringstream hs(header), rs(row);
  while (std::getline(hs, h, ',') && std::getline(rs, v, ','))
    if (h == "loss") return v;
  return "<no loss column>";
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

// The demo's teacher and finetuning stages cut to a few seconds.
constexpr const char* kSmallStages =
    " --teacher-set model.depth=1 --teacher-set data.loader.batch_size=4"
    " --teacher-set train.epochs=1 --teacher-set train.warmup_epochs=0 --teacher-set threads=1"
    " --finetune-set model.depth=1 --finetune-set data.loader.batch_size=4"
    " --finetune-set train.epochs=1 --finetune-set train.warmup_epochs=0"
    " --finetune-set eval.every=1 --finetune-set threads=1"
    " --segment-set model.depth=1 --segment-set model.out_indices=[0]"
    " --segment-set model.channels=16 --segment-set data.img_size=64"
    " --segment-set data.loader.batch_size=4 --segment-set train.epochs=1"
    " --segment-set threads=1";

TEST_CASE("demo writes a run directory that can be repeated from its config.yaml") {
  evax::test::TempDir tmp("demo");
  const std::string small = " --set synth.n=24 --set synth.size=64 --set data.loader.batch_size=4"
                            " --set train.epochs=1 --set model.depth=1 --set threads=1" +
                            std::string(kSmallStages);
  Result r = run("demo --run-dir '" + (tmp / "run1") + "'" + small);
  INFO(r.err);
  REQUIRE(r.code == 0);
  for (const char* f : {"config.yaml", "log.txt", "data/classification.csv", "data/pretrain.csv",
                        "metrics.csv", "teacher/config.yaml", "finetune/config.yaml",
                        "finetune/eval/test/metrics.json", "segment/config.yaml",
                        "segment/eval/test/metrics.json", "segment/eval/test/per_image.csv",
                        "finetune/cam/metrics.json"})
    CHECK(fs::exists(tmp / ("run1/" + std::string(f))));
  CHECK_THAT(evax::read_file(tmp / "run1/log.txt"),
             Contains("wrote 24 images") && Contains("teacher training done") &&
                 Contains("teacher vit_tiny_patch16_224 (1 blocks)") &&
                 Contains("pretraining done") && Contains("finetuning reached") &&
                 Contains("test mAUC") && Contains("segmentation reached") &&
                 Contains("test foreground Dice") && Contains("vs chance"));
  CHECK_THAT(evax::read_file(tmp / "run1/config.yaml"), Contains("n: 24"));
  CHECK(fs::exists(tmp / "run1/metrics.csv"));

  r = run("demo --config '" + (tmp / "run1/config.yaml") + "' --run-dir '" + (tmp / "run2") + "'" +
          kSmallStages);
  INFO(r.err);
  REQUIRE(r.code == 0);
  // Identical but for the data and teacher paths, which the demo points into each run directory.
  auto without_manifest = [](std::string s) {
    for (const char* key : {"manifest:", "checkpoint:"}) {
      auto p = s.find(key);
      if (p != std::string::npos) s.erase(p, s.find('\n', p) - p);
    }
    return s;
  };
  CHECK(without_manifest(evax::read_file(tmp / "run2/config.yaml")) ==
        without_manifest(evax::read_file(tmp / "run1/config.yaml")));
  CHECK(evax::read_file(tmp / "run2/data/classification.csv") ==
        evax::read_file(tmp / "run1/data/classification.csv"));
}

TEST_CASE("demo without --run-dir uses runs/<config>-<timestamp>") {
  evax::test::TempDir tmp("demodefault");
  Result r = run("demo --set synth.n=24 --set synth.size=64 --set data.loader.batch_size=4"
                 " --set train.epochs=1 --set model.depth=1 --set threads=1" +
                     std::string(kSmallStages),
                 tmp.str());
  INFO(r.err);
  REQUIRE(r.code == 0);
  int found = 0;
  for (auto& e : fs::directory_iterator(tmp / "runs"))
    found += e.path().filename().string().rfind("demo-", 0) == 0;
  CHECK(found == 1);
}

TEST_CASE("evax --help documents every exit code") {
  Result r = run("--help");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("3 data error") && Contains("4 distributed peer failure") &&
                        Contains("5 out of memory"));
}

TEST_CASE("pretrain needs --config") {
  Result r = run("pretrain");
  CHECK(r.code == 2);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err, Contains("missing required option --config"));
  r = run("pretrain --config ''");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("--config needs a non-empty FILE"));
  CHECK_THAT(run("pretrain --help").out, Contains("(required)"));
}

TEST_CASE("pretrain config holes: unknown keys first, empty manifest, loader options, seed") {
  evax::test::TempDir tmp("holes");
  const std::string cfg =
      "pretrain --config '" + evax::test::source_path("configs/pretrain/demo.yaml") + "'";
  const std::string manifest = " --set data.manifest='" + (tmp / "none.csv") + "'";
  // Unknown keys are reported before any semantic check.
  Result r = run(cfg + manifest + " --run-dir '" + (tmp / "r1") +
                 "' --set target.kind=teacher --set target.checkpont=t.ckpt");
  CHECK(r.code == 2);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err, Contains("unknown key `target.checkpont` (did you mean `target.checkpoint`?)"));
  CHECK_FALSE(fs::exists(tmp / "r1"));
  // An empty required path.
  r = run(cfg + " --run-dir '" + (tmp / "r2") + "'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("`data.manifest` is empty"));
  // A loader option the task cannot honour is rejected, not overwritten.
  r = run(cfg + manifest + " --run-dir '" + (tmp / "r3") + "' --set data.loader.drop_last_batch=false");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("`data.loader.drop_last_batch` = false") && Contains("partial batch"));
  // data.loader.seed next to the run's seed (base.yaml has `seed: 0`) is valid: the run gets as
  // far as reading the manifest.
  r = run(cfg + manifest + " --run-dir '" + (tmp / "r4") + "' --set data.loader.seed=3");
  CHECK(r.code == 3);
  CHECK_THAT(r.err, !Contains("unknown key") && Contains("none.csv"));
  // A key written twice in one file.
  evax::write_file_atomic(tmp / "dup.yaml",
                          "_base_: '" + evax::test::source_path("configs/pretrain/demo.yaml") +
                              "'\ndata:\n  loader: {batch_size: 4}\n  loader: {batch_size: 8}\n");
  r = run("pretrain --config '" + (tmp / "dup.yaml") + "'" + manifest);
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("dup.yaml:4") && Contains("duplicate key `data.loader`") &&
                        Contains("lines 3 and 4"));
}

TEST_CASE("pretrain honours data.loader.shuffle and data.loader.seed") {
  evax::test::TempDir tmp("shuffle");
  Result r = run("synth --out '" + (tmp / "data") + "' --n 12 --size 64 --seed 1 --no-dicom");
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::string common =
      "pretrain --config '" + evax::test::source_path("configs/pretrain/demo.yaml") +
      "' --set data.manifest='" + (tmp / "data/pretrain.csv") +
      "' --set data.views.student_size=64 --set data.views.teacher_size=64"
      " --set masking.min_block=2 --set model.depth=1 --set data.loader.batch_size=2"
      " --set data.loader.workers=0 --set train.log_every=1 --set threads=1 --max-steps 1"
      " --set data.loader.seed=3";
  r = run(common + " --run-dir '" + (tmp / "shuffled") + "'");
  INFO(r.err);
  REQUIRE(r.code == 0);
  r = run(common + " --run-dir '" + (tmp / "ordered") + "' --set data.loader.shuffle=false");
  INFO(r.err);
  REQUIRE(r.code == 0);
  // Same weights, masks and crops per image: only the images in the first batch differ.
  const std::string a = first_loss(tmp / "shuffled/metrics.csv");
  const std::string b = first_loss(tmp / "ordered/metrics.csv");
  CHECK(a != "<no loss column>");
  CHECK(a != b);
}

TEST_CASE("a rank whose peer is gone exits 4 (distributed peer failure)") {
  evax::test::TempDir tmp("deadpeer");
  const std::string env = "RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(free_port());
  Result r = run("pretrain --config '" + evax::test::source_path("configs/pretrain/demo.yaml") +
                     "' --set data.manifest=m.csv --set dist.backend=store"
                     " --set dist.timeout_s=1 --run-dir '" + (tmp / "run") + "'",
                 "", env);
  CHECK(r.code == 4);
  CHECK_THAT(r.err, Contains("evax: error: rank 1"));
}

TEST_CASE("running out of memory exits 5 and says what to lower") {
  evax::test::TempDir tmp("oom");
  // A ViT at 268435456² pixels: its position embedding alone would take ~200 PB.
  Result r = run("embed --model vit_tiny_patch16_224 --image-size 268435456 --input '" +
                 (tmp / "none.png") + "' --out '" + (tmp / "out.safetensors") + "'");
  CHECK(r.code == 5);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err, Contains("out of host memory") && Contains("batch size") &&
                        Contains("bf16"));
}

TEST_CASE("launch returns a rank's own failure, not the peer failure it caused") {
  // Rank 0 reports a peer failure (4) first; rank 1, the cause, exits 5 on its own.
  Result r = run("launch --nproc 2 -- sh -c 'trap \"\" TERM; "
                 "if [ $RANK = 0 ]; then sleep 0.3; exit 4; fi; sleep 1; exit 5'");
  CHECK(r.code == 5);
  CHECK_THAT(r.err, Contains("first failure: rank 1"));
  // Only peer failures: the first one.
  r = run("launch --nproc 2 -- sh -c 'if [ $RANK = 0 ]; then exit 4; fi; sleep 30'");
  CHECK(r.code == 4);
}
