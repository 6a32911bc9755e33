// End-to-end segmentation runs of the evax binary on a small synthetic set (the lung masks):
// evaluation, best/ by mDice, the test split scored; `evax evaluate`, `evax predict` and
// `evax embed` agree with it; resume ends bit-identical; two gloo ranks with synchronised
// BatchNorm equal one rank; bad input fails with the file and the reason. Also the layer-decay
// rule and the loss against their definitions.
#include <catch2/catch.hpp>


#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "evax/core/files.h"
#include "evax/io/image.h"
#include "evax/io/safetensors.h"
#include "evax/segment/losses.h"
#include "evax/segment/task.h"
#include "cli_util.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using test::evax_bin;
using test::shell;

namespace {

std::string dataset() {
  return test::synth_dataset("segment_synth", "--n 40 --size 64 --seed 7 --no-dicom --threads 1");
}

// The base config; a top-level key of `extra` replaces the base's entry of that key as a whole.
std::string write_config(const test::TempDir& tmp, const std::string& extra = "",
                         const std::string& name = "cfg.yaml") {
  const std::vector<std::pair<std::string, std::string>> base = {
      {"model", "model: {name: upernet_eva_x_tiny_patch16, depth: 2, out_indices: [1],\n"
                "        channels: 16, drop_path: 0.1, norm: bn}\n"},
      {"data", "data:\n"
               "  manifest: " + dataset() + "/segmentation_lungs.csv\n"
               "  classes: [background, lungs]\n"
               "  img_size: 64\n"
               "  loader: {batch_size: 4, workers: 2}\n"},
      {"optimizer", "optimizer: {lr: 1.0e-3}\n"},
      {"train", "train: {epochs: 2, log_every: 2}\n"},
      {"eval", "eval: {split: val, every: 1}\n"},
      {"seed", "seed: 3\n"},
      {"threads", "threads: 1\n"}};
  return test::write_config_file(tmp / name, base, extra,
                                 "_base_: " + test::source_path("configs/segment/base.yaml") + "\n");
}

std::string latest(const std::string& run) {
  std::vector<std::string> dirs;
  for (auto& e : fs::directory_iterator(run + "/checkpoints"))
    if (e.path().filename().string().rfind("step-", 0) == 0) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  REQUIRE(!dirs.empty());
  return dirs.back();
}

}  // namespace

TEST_CASE("segment layer decay: mmseg's ids and scales, and its weight-decay rule") {
  // num_layers 12 → 14 ids; scale 0.85^(13 − id).
  const double r = 0.85;
  CHECK(upernet_layer_decay_scale("backbone.cls_token", 12, r) == Approx(std::pow(r, 13)));
  CHECK(upernet_layer_decay_scale("backbone.pos_embed", 12, r) == Approx(std::pow(r, 13)));
  CHECK(upernet_layer_decay_scale("backbone.patch_embed.proj.weight", 12, r) == Approx(std::pow(r, 13)));
  CHECK(upernet_layer_decay_scale("backbone.blocks.0.attn.qkv.weight", 12, r) == Approx(0.1422417));
  CHECK(upernet_layer_decay_scale("backbone.blocks.11.mlp.w3.bias", 12, r) == Approx(0.85));
  CHECK(upernet_layer_decay_scale("backbone.blocks.5.norm1.weight", 12, r) == Approx(std::pow(r, 7)));
  for (const char* n : {"backbone.fpn1.0.weight", "backbone.fpn2.0.bias", "decode_head.conv_seg.weight",
                        "decode_head.psp_modules.0.1.bn.weight", "auxiliary_head.conv_seg.bias"})
    CHECK(upernet_layer_decay_scale(n, 12, r) == 1.0);
  CHECK(upernet_layer_decay_scale("backbone.blocks.1.norm1.weight", 2, 0.5) == 0.5);
  // pos_embed and cls_token ARE decayed here (mmseg's bare-name check misses the prefix).
  CHECK_FALSE(upernet_no_weight_decay("backbone.pos_embed", torch::zeros({1, 5, 4})));
  CHECK_FALSE(upernet_no_weight_decay("backbone.cls_token", torch::zeros({1, 1, 4})));
  CHECK(upernet_no_weight_decay("backbone.blocks.0.attn.q_bias", torch::zeros({4})));
  CHECK(upernet_no_weight_decay("decode_head.conv_seg.bias", torch::zeros({1})));
  CHECK(upernet_no_weight_decay("backbone.fpn1.1.weight", torch::zeros({4})));
  CHECK_FALSE(upernet_no_weight_decay("backbone.fpn1.0.weight", torch::zeros({4, 4, 2, 2})));
}

TEST_CASE("segment loss: BCE on the resized logits over all pixels, CE with ignore, Dice") {
  torch::manual_seed(0);
  auto logits = torch::randn({2, 1, 4, 4}, torch::kFloat64);
  auto labels = torch::randint(0, 2, {2, 8, 8}, torch::kUInt8);
  labels[0][0][0] = 255;
  namespace F = torch::nn::functional;
  auto up = F::interpolate(logits, F::InterpolateFuncOptions().size(std::vector<int64_t>{8, 8})
                                       .mode(torch::kBilinear).align_corners(false));
  auto y = labels.to(torch::kFloat64);
  auto valid = (labels != 255).to(torch::kFloat64);
  auto per = -(y.clamp_max(1) * torch::log_sigmoid(up.squeeze(1)) +
               (1 - y.clamp_max(1)) * torch::log_sigmoid(-up.squeeze(1)));
  auto expected = (per * valid * (labels != 255)).sum() / 128.0;
  // The loss works in fp32.
  CHECK(segmentation_loss(logits, labels).item<double>() == Approx(expected.item<double>()).epsilon(1e-6));

  auto logits3 = torch::randn({2, 3, 8, 8}, torch::kFloat32);
  auto labels3 = torch::randint(0, 3, {2, 8, 8}, torch::kUInt8);
  labels3[1][2][3] = 255;
  auto ce = F::cross_entropy(logits3, labels3.to(torch::kLong), F::CrossEntropyFuncOptions().ignore_index(255));
  CHECK(segmentation_loss(logits3, labels3).item<double>() == Approx(ce.item<double>()).epsilon(1e-6));

  // Dice by hand (8 of 16 pixels foreground): a confident correct prediction gives 1 − 17/17 = 0,
  // an inverted one 1 − (0 + 1) / (8 + 8 + 1).
  auto lab = torch::zeros({1, 4, 4}, torch::kUInt8);
  lab.index_put_({0, torch::indexing::Slice(0, 2)}, 1);
  auto good = (lab.to(torch::kFloat32) * 40 - 20).unsqueeze(1);
  CHECK(soft_dice_loss(good, lab).item<double>() == Approx(0.0).margin(1e-6));
  CHECK(soft_dice_loss(-good, lab).item<double>() == Approx(1.0 - 1.0 / 17.0).margin(1e-6));
  auto with_dice = segmentation_loss(good, lab, SegLossOptions().dice_weight(0.5));
  CHECK(with_dice.item<double>() ==
        Approx(segmentation_loss(good, lab).item<double>() + 0.5 * soft_dice_loss(good, lab).item<double>()));
}

TEST_CASE("segment: evaluation hook, best/ by mDice, test scoring, evaluate/predict/embed agree") {
  test::TempDir tmp("seg_run");
  const std::string cfg = write_config(tmp);
  const std::string run = tmp / "run";
  REQUIRE(shell(evax_bin() + " segment --config '" + cfg + "' --run-dir '" + run + "' 2>'" +
                (tmp / "err") + "'") == 0);
  const std::string log = read_file(run + "/log.txt");
  CHECK_THAT(log, Contains("eval epoch 1") && Contains("eval epoch 2") && Contains("mDice"));
  CHECK_THAT(read_file(run + "/metrics.csv"), Contains("eval/mDice") && Contains("eval/dice/lungs"));
  auto best = test::read_json(run + "/checkpoints/best/meta.json");
  CHECK(best["metric"] == "mDice");
  CHECK(best["task"]["kind"] == "segmenter");
  CHECK(best["task"]["classes"] == nlohmann::json{"background", "lungs"});
  const std::string ev = run + "/eval/test";
  auto m = test::read_json(ev + "/metrics.json");
  REQUIRE(m.contains("mDice"));
  CHECK(m["per_class"].contains("lungs"));
  CHECK(m["split"] == "test");
  CHECK(fs::exists(ev + "/per_class.csv"));
  const std::string per_image = read_file(ev + "/per_image.csv");
  CHECK_THAT(per_image, Contains("path,dice_lungs"));
  // Overlays of the worst and best images by Dice, at each image's own size, with their index.
  {
    std::vector<std::pair<std::string, double>> dice;  // per_image.csv rows
    std::istringstream in(per_image);
    std::string row;
    std::getline(in, row);
    while (std::getline(in, row)) {
      const auto comma = row.rfind(',');
      if (comma + 1 < row.size())
        dice.emplace_back(row.substr(0, comma), std::stod(row.substr(comma + 1)));
    }
    REQUIRE(dice.size() >= 2);
    std::stable_sort(dice.begin(), dice.end(),
                     [](const auto& a, const auto& b) { return a.second < b.second; });
    const std::string index = read_file(ev + "/overlays/index.csv");
    std::istringstream lines(index);
    std::getline(lines, row);
    CHECK(row == "file,path,mean_dice");
    size_t n = 0;
    while (std::getline(lines, row)) {
      const auto a = row.find(','), b = row.rfind(',');
      const std::string file = row.substr(0, a), path = row.substr(a + 1, b - a - 1);
      INFO(row);
      ++n;
      if (n == 1) {  // the worst image comes first, named so
        CHECK(file.rfind("worst-1_", 0) == 0);
        CHECK(path == dice.front().first);
      }
      const cv::Mat img = image_decode(read_file(ev + "/overlays/" + file), file);
      const cv::Mat orig = image_decode(read_file(path), path);
      CHECK(img.size() == orig.size());
    }
    CHECK(n == std::min<size_t>(8, dice.size()));
  }

  // evax evaluate on the run's best/ reproduces metrics.json.
  REQUIRE(shell(evax_bin() + " evaluate --config '" + cfg + "' --checkpoint '" + run +
                "' --split test --out '" + (tmp / "ev") + "' --run-dir '" + (tmp / "evrun") +
                "' 2>/dev/null") == 0);
  CHECK(test::read_json(tmp / "ev/metrics.json") == m);
  CHECK(read_file(tmp / "ev/per_image.csv") == per_image);

  // evax predict from the checkpoint alone: masks (0/255) and overlays at the image's size.
  std::istringstream lines(per_image);
  std::string line;
  std::getline(lines, line);
  std::getline(lines, line);
  const std::string first = line.substr(0, line.find(','));
  REQUIRE(shell(evax_bin() + " predict --checkpoint '" + run + "/checkpoints/best' --out '" +
                (tmp / "pred") + "' '" + first + "' 2>/dev/null") == 0);
  const std::string stem = fs::path(first).stem().string();
  cv::Mat mask = mask_read(tmp / ("pred/masks/" + stem + ".png"));
  CHECK(mask.rows == 64);
  CHECK(mask.cols == 64);
  for (int y = 0; y < mask.rows; ++y)
    for (int x = 0; x < mask.cols; ++x) REQUIRE((mask.at<uint8_t>(y, x) == 0 || mask.at<uint8_t>(y, x) == 255));
  CHECK(fs::exists(tmp / ("pred/overlays/" + stem + ".png")));
  CHECK_THAT(read_file(tmp / "pred/predictions.csv"), Contains("fraction_lungs"));

  // evax embed: logits at the input's resolution; thresholding them gives predict's mask.
  cv::Mat unit = image_read_unit(first);
  auto x = normalize(resize(unit_to_tensor(unit), 64, 64, Interp::kBilinear), kEvaxMean, kEvaxStd)
               .unsqueeze(0);
  safetensors_save(tmp / "px.safetensors", TensorMap{{"pixel_values", x}});
  REQUIRE(shell(evax_bin() + " embed --model upernet_eva_x_tiny_patch16 --checkpoint '" + run +
                "/checkpoints/best' --input '" + (tmp / "px.safetensors") + "' --out '" +
                (tmp / "lg.safetensors") + "' 2>/dev/null") == 0);
  auto lg = safetensors_load(tmp / "lg.safetensors");
  REQUIRE(lg.size() == 1);
  auto logits = lg[0].second;
  CHECK(logits.sizes() == torch::IntArrayRef({1, 1, 64, 64}));
  auto from_embed = (torch::sigmoid(logits[0][0]) > 0.3).to(torch::kUInt8) * 255;
  auto from_predict = torch::from_blob(mask.data, {64, 64}, torch::kUInt8);
  CHECK((from_embed != from_predict).sum().item<int64_t>() == 0);
}

TEST_CASE("segment: stop and resume ends bit-identical to an uninterrupted run, best/ included") {
  test::TempDir tmp("seg_resume");
  const std::string cfg = write_config(tmp, "ema: {decay: 0.9}\n");
  REQUIRE(shell(evax_bin() + " segment --config '" + cfg + "' --run-dir '" + (tmp / "a") + "' 2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " segment --config '" + cfg + "' --run-dir '" + (tmp / "b") +
                "' --max-steps 5 2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " segment --config '" + cfg + "' --run-dir '" + (tmp / "b") +
                "' --resume auto 2>/dev/null") == 0);
  for (const char* f : {"model.safetensors", "trainer.safetensors"}) {
    INFO(f);
    CHECK(test::same_maps(safetensors_load(latest(tmp / "a") + "/" + f),
                          safetensors_load(latest(tmp / "b") + "/" + f)));
  }
  CHECK(test::same_maps(safetensors_load(tmp / "a/checkpoints/best/model.safetensors"),
                        safetensors_load(tmp / "b/checkpoints/best/model.safetensors")));
  CHECK(read_file(tmp / "a/eval/test/metrics.json") == read_file(tmp / "b/eval/test/metrics.json"));
}

TEST_CASE("segment: two gloo ranks with synchronised BatchNorm equal one rank") {
  test::TempDir tmp("seg_dist");
  // No dropout or drop path: their random masks differ between one and two processes.
  const std::string cfg = write_config(
      tmp, "model: {name: upernet_eva_x_tiny_patch16, depth: 2, out_indices: [1],\n"
           "        channels: 16, drop_path: 0, dropout: 0, norm: syncbn}\n");
  REQUIRE(shell(evax_bin() + " segment --config '" + cfg + "' --run-dir '" + (tmp / "one") +
                "' --set data.loader.batch_size=4 2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " launch --nproc 2 -- segment --config '" + cfg + "' --run-dir '" +
                (tmp / "two") + "' --set data.loader.batch_size=2 --set dist.backend=gloo 2>'" +
                (tmp / "err") + "'") == 0);
  const auto a = safetensors_load(latest(tmp / "one") + "/model.safetensors");
  const auto b = safetensors_load(latest(tmp / "two") + "/model.safetensors");
  // Per tensor, the difference relative to the tensor's scale where that exceeds 1 (measured:
  // 2.5e-5 with MKL's AVX-512 kernels, on BatchNorm running variances of 8-27; 7.7e-5 without).
  const double d = test::max_scaled_diff(a, b);
  INFO("max difference of parameters and BatchNorm statistics (relative above 1): " << d);
  CHECK(d <= 1e-4);
  // Plain BatchNorm instead: each rank normalises its half batch, so the runs differ.
  const std::string local = write_config(
      tmp, "model: {name: upernet_eva_x_tiny_patch16, depth: 2, out_indices: [1],\n"
           "        channels: 16, drop_path: 0, dropout: 0, norm: bn}\n", "bn.yaml");
  REQUIRE(shell(evax_bin() + " launch --nproc 2 -- segment --config '" + local + "' --run-dir '" +
                (tmp / "bn") + "' --set data.loader.batch_size=2 --set dist.backend=gloo 2>/dev/null") == 0);
  CHECK(test::max_abs_diff(a, safetensors_load(latest(tmp / "bn") + "/model.safetensors")) > 1e-3);
  // The gathered evaluation scores every image once, like one rank.
  auto m1 = test::read_json(tmp / "one/eval/test/metrics.json");
  auto m2 = test::read_json(tmp / "two/eval/test/metrics.json");
  CHECK(m1["images"] == m2["images"]);
}

TEST_CASE("segment: bad input names the file, the key or the value and exits 2 or 3") {
  test::TempDir tmp("seg_bad");
  // A manifest whose rows have no mask.
  CHECK(shell(evax_bin() + " segment --config '" +
              write_config(tmp, "data:\n  manifest: " + dataset() + "/classification.csv\n"
                                "  img_size: 64\n", "nomask.yaml") +
              "' --run-dir '" + (tmp / "a") + "' 2>'" + (tmp / "e1") + "'") == 3);
  CHECK_THAT(read_file(tmp / "e1"), Contains("has no mask"));
  // A mask whose size differs from its image.
  const std::string d = dataset();
  std::ifstream in(d + "/segmentation_lungs.csv");
  std::string header, row, csv;
  std::getline(in, header);
  csv = header + "\n";
  cv::Mat small(32, 32, CV_8U, cv::Scalar(255));
  image_write_png(tmp / "small.png", small);
  bool replaced = false;
  while (std::getline(in, row)) {
    auto comma = row.find_last_of(',');
    if (!replaced && row.find(",train,") != std::string::npos) {
      row = row.substr(0, comma + 1) + (tmp / "small.png");
      replaced = true;
    } else {
      row = row.substr(0, comma + 1) + d + "/" + row.substr(comma + 1);
    }
    auto first = row.find(',');
    csv += d + "/" + row.substr(0, first) + row.substr(first) + "\n";
  }
  write_file_atomic(tmp / "bad.csv", csv);
  CHECK(shell(evax_bin() + " segment --config '" +
              write_config(tmp, "data:\n  manifest: " + (tmp / "bad.csv") + "\n  img_size: 64\n"
                                "  loader: {batch_size: 4, workers: 0}\n", "size.yaml") +
              "' --run-dir '" + (tmp / "b") + "' 2>'" + (tmp / "e2") + "'") == 3);
  CHECK_THAT(read_file(tmp / "e2"), Contains("small.png") && Contains("32x32"));
  // An unknown key, with its path.
  CHECK(shell(evax_bin() + " segment --config '" +
              write_config(tmp, "segment: {layer_decy: 0.9}\n", "typo.yaml") + "' --run-dir '" +
              (tmp / "c") + "' 2>'" + (tmp / "e3") + "'") == 2);
  CHECK_THAT(read_file(tmp / "e3"), Contains("segment.layer_decy"));
  // A checkpoint of another width as init (a whole segmentation model: strict): exit 3, naming it.
  REQUIRE(shell(evax_bin() + " segment --config '" + write_config(tmp, "", "tiny.yaml") +
                "' --run-dir '" + (tmp / "tiny") + "' --max-steps 1 2>/dev/null") == 0);
  CHECK(shell(evax_bin() + " segment --config '" +
              write_config(tmp, "model: {name: upernet_eva_x_small_patch16, depth: 2, out_indices: [1],\n"
                                "        channels: 16, init: " + (tmp / "tiny") + "}\n", "other.yaml") +
              "' --run-dir '" + (tmp / "d") + "' 2>'" + (tmp / "e4") + "'") == 3);
  CHECK_THAT(read_file(tmp / "e4"), Contains("tiny") && Contains("backbone.blocks.0"));
}
