// The demo's dense teacher: per-patch targets from bit masks, a teacher run through the binary,
// and that run loading (strictly, head dropped) as the MIM target of evax pretrain.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <filesystem>

#include "evax/core/files.h"
#include "evax/pretrain/dense_teacher.h"
#include "cli_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using test::evax_bin;
using test::shell;

TEST_CASE("dense teacher: a patch's target bit is set when any of its pixels has the bit") {
  auto mask = torch::zeros({1, 32, 48}, torch::kUInt8);  // 2 x 3 patches of 16
  mask[0][3][3] = 1;               // bit 0 in patch (0, 0)
  mask[0][20][5] = 4 | 1;          // bits 0 and 2 in patch (1, 0)
  mask[0][31][47] = 16;            // bit 4 in patch (1, 2), its last pixel
  mask[0][15][16] = 2;             // bit 1 in patch (0, 1), first column
  auto t = DenseTeacherTask::patch_targets(mask, 16, 5);
  REQUIRE(t.sizes() == torch::IntArrayRef({6, 5}));
  auto expect = torch::zeros({6, 5});
  expect[0][0] = 1;
  expect[3][0] = 1, expect[3][2] = 1;
  expect[5][4] = 1;
  expect[1][1] = 1;
  CHECK(torch::equal(t, expect));
}

TEST_CASE("dense teacher: a run trains, and evax pretrain takes it as its teacher") {
  test::TempDir tmp("dense_teacher");
  REQUIRE(shell(evax_bin() + " synth --out '" + (tmp / "data") + "' --n 24 --size 64 --seed 2 --no-dicom"
                             " --threads 1 --conspicuity 2 2>/dev/null") == 0);
  REQUIRE(fs::exists(tmp / "data/findings.csv"));
  const std::string tcfg = tmp / "teacher.yaml";
  write_file_atomic(tcfg, "_base_: " + test::source_path("configs/pretrain/demo_teacher.yaml") +
                              "\nmodel: {name: vit_tiny_patch16_224, depth: 1}\n"
                              "data:\n  manifest: " + (tmp / "data/findings.csv") +
                              "\n  split: all\n  img_size: 64\n  loader: {batch_size: 4, workers: 1}\n"
                              "train: {epochs: 1, warmup_epochs: 0, log_every: 1}\nthreads: 1\n");
  REQUIRE(shell(evax_bin() + " teacher --config '" + tcfg + "' --run-dir '" + (tmp / "teacher") + "' 2>/dev/null") == 0);
  CHECK_THAT(read_file(tmp / "teacher/log.txt"), Contains("teacher training done: 6 steps"));
  const std::string pre =
      evax_bin() + " pretrain --config '" + test::source_path("configs/pretrain/demo.yaml") +
      "' --set data.manifest='" + (tmp / "data/pretrain.csv") +
      "' --set data.split=all --set data.views.student_size=64 --set data.views.teacher_size=64"
      " --set masking.min_block=2 --set model.depth=1 --set data.loader.batch_size=4"
      " --set data.loader.workers=1 --set threads=1 --max-steps 2 --set target.kind=teacher"
      " --set target.teacher=vit_tiny_patch16_224 --set target.checkpoint='" + (tmp / "teacher") + "'";
  REQUIRE(shell(pre + " --set target.teacher_depth=1 --run-dir '" + (tmp / "mim") + "' 2>/dev/null") == 0);
  const std::string log = read_file(tmp / "mim/log.txt");
  CHECK_THAT(log, Contains("teacher vit_tiny_patch16_224 (1 blocks) from") &&
                      Contains("target: teacher vit_tiny_patch16_224 (192-d)"));
  // A teacher of another depth does not fit: refused with the missing tensors named.
  CHECK(shell(pre + " --set target.teacher_depth=2 --run-dir '" + (tmp / "bad") + "' 2>'" +
              (tmp / "err") + "'") == 3);
  CHECK_THAT(read_file(tmp / "err"), Contains("blocks.1."));
}
