// `bf16_cpu: true` (with the default `bf16: true`) in finetuning and segmentation: the run says it
// uses bf16 autocast, and its first steps' losses and gradient norms are close to the float32
// run's but not equal to them (pretraining has its own test in tests/pretrain). Three steps of a
// two-block model at 64 px: a few seconds each.
#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

#include "cli_util.h"
#include "evax/core/files.h"
#include "test_util.h"
#include "tiny_finetune_config.h"

using Catch::Matchers::Contains;
using evax::test::evax_bin;
using evax::test::shell;

namespace {

// metrics.csv's `loss` and `grad_norm` per step.
std::vector<std::pair<double, double>> losses(const std::string& run) {
  std::istringstream in(evax::read_file(run + "/metrics.csv"));
  std::string line, cell;
  std::getline(in, line);
  std::vector<std::string> cols;
  for (std::istringstream h(line); std::getline(h, cell, ',');) cols.push_back(cell);
  auto col = [&](const std::string& name) {
    for (size_t i = 0; i < cols.size(); ++i)
      if (cols[i] == name) return i;
    FAIL("metrics.csv has no column " << name);
    return size_t(0);
  };
  const size_t li = col("loss"), gi = col("grad_norm");
  std::vector<std::pair<double, double>> out;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    for (std::istringstream r(line); std::getline(r, cell, ',');) cells.push_back(cell);
    out.emplace_back(std::stod(cells.at(li)), std::stod(cells.at(gi)));
  }
  return out;
}

// Runs `command` on `cfg` in float32 and with bf16_cpu, 3 steps each, and compares.
void check_bf16_run(const evax::test::TempDir& tmp, const std::string& command,
                    const std::string& cfg) {
  const std::string base = evax_bin() + " " + command + " --config '" + cfg + "' --max-steps 3";
  REQUIRE(shell(base + " --run-dir '" + (tmp / "fp32") + "' 2>/dev/null") == 0);
  REQUIRE(shell(base + " --set bf16_cpu=true --run-dir '" + (tmp / "bf16") + "' 2>/dev/null") == 0);
  CHECK_THAT(evax::read_file(tmp / "bf16/log.txt"), Contains("device cpu, bf16 autocast"));
  CHECK_THAT(evax::read_file(tmp / "fp32/log.txt"), Contains("device cpu, float32"));
  const auto f = losses(tmp / "fp32"), b = losses(tmp / "bf16");
  REQUIRE(f.size() == 3);
  REQUIRE(b.size() == 3);
  double worst = 0;
  bool differs = false;
  for (size_t i = 0; i < f.size(); ++i) {
    INFO("step " << i + 1 << ": loss " << b[i].first << " (float32 " << f[i].first
                 << "), grad norm " << b[i].second << " (float32 " << f[i].second << ")");
    REQUIRE(std::isfinite(b[i].first));
    REQUIRE(std::isfinite(b[i].second));
    worst = std::max({worst, std::abs(b[i].first / f[i].first - 1),
                      std::abs(b[i].second / f[i].second - 1)});
    differs = differs || b[i] != f[i];
  }
  // Measured: at most 1.6e-3 relative (grad norm) for both tasks; bf16 rounding is ~2e-3 per op.
  INFO("largest relative difference of loss or grad norm: " << worst);
  CHECK(worst < 0.02);
  CHECK(differs);
}

}  // namespace

TEST_CASE("finetune with bf16_cpu: bf16 autocast, losses close to float32's") {
  evax::test::TempDir tmp("ft_bf16");
  const std::string cfg = evax::test::tiny_finetune_config(tmp, 1);
  check_bf16_run(tmp, "finetune", cfg);
}

TEST_CASE("segment with bf16_cpu: bf16 autocast, losses close to float32's") {
  evax::test::TempDir tmp("seg_bf16");
  const std::string data =
      evax::test::synth_dataset("segment_synth", "--n 40 --size 64 --seed 7 --no-dicom --threads 1");
  const std::string cfg = evax::test::write_config_file(
      tmp / "cfg.yaml",
      {{"model", "model: {name: upernet_eva_x_tiny_patch16, depth: 2, out_indices: [1],\n"
                 "        channels: 16, drop_path: 0.0, norm: bn}\n"},
       {"data", "data:\n"
                "  manifest: " + data + "/segmentation_lungs.csv\n"
                "  classes: [background, lungs]\n"
                "  img_size: 64\n"
                "  loader: {batch_size: 4, workers: 1}\n"},
       {"optimizer", "optimizer: {lr: 1.0e-3}\n"},
       {"train", "train: {epochs: 1, log_every: 1}\n"},
       {"eval", "eval: {split: val, every: 100}\n"},
       {"seed", "seed: 3\n"},
       {"threads", "threads: 1\n"}},
      "", "_base_: " + evax::test::source_path("configs/segment/base.yaml") + "\n");
  check_bf16_run(tmp, "segment", cfg);
}
