// `--bf16` of evax embed, predict and cam on the CPU: the outputs stay float32, are close to the
// float32 run's, and differ from it (so the matmuls really ran in bf16).
//
// Tolerances: bf16 keeps 8 significant bits (unit roundoff 2^-9 ≈ 2e-3). Every matmul of the 12
// blocks rounds its inputs to that and the errors add up along the residual stream: on the
// EVA-X-S fixture the pooled features differ by 1.0e-2 relative (L2), the tokens by 1.3e-2. The
// bounds below leave 3-5x margin over what was measured. The floors sit far above float32's own
// reordering noise (~1e-6 relative): below them nothing ran in bf16.
#include <catch2/catch.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "cli_util.h"
#include "evax/core/files.h"
#include "evax/io/safetensors.h"
#include "tensor_util.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using evax::test::evax_bin;
using evax::test::max_abs;
using evax::test::shell;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) {
  const std::string p = std::string(EVAX_BINARY_DIR) + "/fixtures/models/" + name;
  INFO("fixture " << p << " comes from the ctest fixture 'models: make fixtures'");
  REQUIRE(fs::exists(p));
  return p;
}

double rel_l2(const at::Tensor& approx, const at::Tensor& exact) {
  return ((approx - exact).norm() / exact.norm()).item<double>();
}

// An evax classifier checkpoint (model.safetensors + meta.json, as evax finetune writes) of the
// EVA-X-Ti fixture with a fixed-seed random 3-class head.
std::string classifier_checkpoint(const evax::test::TempDir& tmp) {
  const std::string dir = tmp / "ckpt";
  fs::create_directories(dir);
  evax::TensorMap sd = evax::safetensors_load(fixture("eva_x_tiny_patch16_224.timm.safetensors"));
  auto gen = at::detail::createCPUGenerator(7);
  sd.emplace_back("head.weight", at::randn({3, 192}, gen) * 0.2);
  sd.emplace_back("head.bias", at::zeros({3}));
  evax::safetensors_save(dir + "/model.safetensors", sd, {});
  evax::write_file_atomic(
      dir + "/meta.json",
      R"({"task": {"kind": "classifier", "model": "eva_x_tiny_patch16", "depth": 12,
          "img_size": 224, "classes": ["a", "b", "c"], "multiclass": false, "crop_pct": 1.0,
          "mean": 0.5, "std": 0.25}})");
  return dir;
}

std::vector<std::vector<double>> csv_numbers(const std::string& path) {
  std::vector<std::vector<double>> rows;
  std::istringstream in(evax::read_file(path));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::istringstream cells(line);
    std::string cell;
    std::getline(cells, cell, ',');  // path
    while (std::getline(cells, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

// Runs `base` + "<tmp>/fp32.safetensors'" and the same with --bf16 (bf16.safetensors); the log
// names the attention kernel once, in the dtype it runs in (autocast's for --bf16).
void run_fp32_and_bf16(const std::string& base, const evax::test::TempDir& tmp) {
  for (const std::string run : {"fp32", "bf16"}) {
    const std::string log = tmp / (run + ".log");
    REQUIRE(shell(base + (tmp / (run + ".safetensors")) + "'" + (run == "bf16" ? " --bf16" : "") +
                  " >'" + log + "' 2>&1") == 0);
    CHECK_THAT(evax::read_file(log),
               Contains(std::string("attention: scaled_dot_product_attention runs flash attention "
                                    "on cpu (") +
                        (run == "bf16" ? "BFloat16" : "Float") + ", head dim 64)"));
  }
}

}  // namespace

TEST_CASE("embed --bf16: float32 features within bf16 tolerance of the float32 run") {
  evax::test::TempDir tmp("embed_bf16");
  const std::string base = evax_bin() + " embed --model eva_x_small_patch16 --checkpoint '" +
                           fixture("eva_x_small_patch16.eva02_ft.pth") + "' --input '" +
                           fixture("eva_x_small_patch16_224.ref.safetensors") + "' --out '";
  run_fp32_and_bf16(base, tmp);
  std::map<std::string, std::string> meta;
  const auto f = evax::safetensors_load(tmp / "fp32.safetensors");
  const auto b = evax::safetensors_load(tmp / "bf16.safetensors", &meta);
  CHECK(meta["precision"] == "bf16 autocast");
  for (const char* key : {"tokens", "pooled"}) {
    const at::Tensor& x = *evax::find(b, key);
    const at::Tensor& ref = *evax::find(f, key);
    CHECK(x.scalar_type() == at::kFloat);
    const double rel = rel_l2(x, ref);
    INFO(key << ": relative L2 difference bf16 vs float32 " << rel << ", max abs "
              << max_abs(x, ref));
    CHECK(rel < 0.05);
    CHECK(rel > 1e-4);
  }
}

TEST_CASE("predict --bf16: probabilities close to the float32 ones") {
  evax::test::TempDir tmp("predict_bf16");
  const std::string ckpt = classifier_checkpoint(tmp);
  REQUIRE(shell(evax_bin() + " synth --out '" + (tmp / "s") +
                "' --n 4 --size 224 --seed 2 --no-dicom --threads 1 2>/dev/null") == 0);
  const std::string base = evax_bin() + " predict --checkpoint '" + ckpt + "' --device cpu '" +
                           (tmp / "s/png") + "' --out '";
  REQUIRE(shell(base + (tmp / "fp32.csv") + "' 2>/dev/null") == 0);
  REQUIRE(shell(base + (tmp / "bf16.csv") + "' --bf16 2>/dev/null") == 0);
  const auto f = csv_numbers(tmp / "fp32.csv"), b = csv_numbers(tmp / "bf16.csv");
  REQUIRE(f.size() == 4);
  REQUIRE(b.size() == 4);
  // Probabilities move by at most a quarter of the logits' error (the sigmoid's slope): with
  // logits of a few units and ~1e-2 relative error, a few 1e-3.
  double worst = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    REQUIRE(f[i].size() == 3);
    for (size_t k = 0; k < 3; ++k) worst = std::max(worst, std::abs(f[i][k] - b[i][k]));
  }
  INFO("max abs probability difference bf16 vs float32: " << worst);
  CHECK(worst < 0.02);  // measured 6.0e-3
  CHECK(worst > 1e-6);
}

TEST_CASE("cam --bf16: float32 maps close to the float32 run's") {
  evax::test::TempDir tmp("cam_bf16");
  const std::string ckpt = classifier_checkpoint(tmp);
  const std::string base = evax_bin() + " cam --checkpoint '" + ckpt + "' --device cpu --input '" +
                           fixture("eva_x_tiny_patch16_224.ref.safetensors") + "' --class 1 --out '";
  run_fp32_and_bf16(base, tmp);
  std::map<std::string, std::string> meta;
  const auto f = evax::safetensors_load(tmp / "fp32.safetensors");
  const auto b = evax::safetensors_load(tmp / "bf16.safetensors", &meta);
  CHECK(meta["precision"] == "bf16 autocast");
  const at::Tensor& cam = *evax::find(b, "cam");
  const at::Tensor& ref = *evax::find(f, "cam");
  CHECK(cam.scalar_type() == at::kFloat);
  CHECK(cam.sizes() == ref.sizes());
  // Maps are min-max scaled to [0, 1]; bf16 moves the gradients' channel weights by ~1e-2
  // relative, so the maps by about as much, most in the low-valued regions.
  const double mean_diff = (cam - ref).abs().mean().item<double>();
  INFO("cam bf16 vs float32: mean abs " << mean_diff << ", max abs " << max_abs(cam, ref));
  CHECK(mean_diff < 0.01);  // measured 1.8e-3 (max abs 1.8e-2)
  CHECK(max_abs(cam, ref) > 1e-5);
  CHECK(cam.amax({1, 2}).min().item<float>() > 0.99f);  // still spans [0, 1]
}

TEST_CASE("embed, predict and cam list --bf16 in their help") {
  for (const char* cmd : {"embed", "predict", "cam"}) {
    evax::test::TempDir tmp(std::string("bf16_help_") + cmd);
    REQUIRE(shell(evax_bin() + " " + cmd + " --help >'" + (tmp / "out") + "' 2>&1") == 0);
    CHECK_THAT(evax::read_file(tmp / "out"), Contains("--bf16"));
  }
}
