// `evax cam` and `evax cam-eval` end to end on a classifier finetuned for one epoch on a tiny
// synthetic set: heat maps, overlays, cams.safetensors and index.csv for images; the
// pixel_values path equals the image path on the same pixels; cam-eval's files and keys under
// both threshold protocols and a fixed threshold; bad arguments fail with the reason; and
// cam_evaluate, the library call the demo makes, agrees with its own per-box IoUs. About 35 s
// on 2 cores (the one-epoch finetuning included).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli_util.h"
#include "evax/classify/predict.h"
#include "evax/core/files.h"
#include "evax/data/manifest.h"
#include "evax/explain/cam.h"
#include "evax/explain/cam_eval.h"
#include "evax/io/image.h"
#include "evax/io/safetensors.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using test::evax_bin;
using test::shell;

namespace {

std::string dataset() {
  return test::synth_dataset("classify_synth", "--n 72 --size 64 --seed 5 --no-dicom --threads 1");
}

// One finetuned run shared by the test cases of this process (made on first use).
std::string finetuned_run() {
  static const test::TempDir tmp("cam_cli_run");
  static const std::string run = [] {
    const std::string dir = tmp.str();
    const std::vector<std::pair<std::string, std::string>> base = {
        {"model", "model: {name: eva_x_tiny_patch16, depth: 1, drop_path: 0.0}\n"},
        {"data", "data:\n"
                 "  manifest: " + dataset() + "/classification.csv\n"
                 "  classes: [Cardiomegaly, Effusion, Nodule, Pneumothorax, Consolidation]\n"
                 "  img_size: 64\n"
                 "  crop_pct: 1.0\n"
                 "  loader: {batch_size: 8, workers: 1}\n"},
        {"optimizer", "optimizer: {lr: 1.0e-3}\n"},
        {"train", "train: {epochs: 1, warmup_epochs: 0, schedule: fixed, log_every: 2}\n"},
        {"eval", "eval: {split: val, every: 1, metric: mauc, batch_size: 16}\n"},
        {"seed", "seed: 3\n"},
        {"threads", "threads: 1\n"}};
    const std::string cfg = test::write_config_file(
        dir + "/cfg.yaml", base, "",
        "_base_: " + test::source_path("configs/classify/base.yaml") + "\n");
    REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + dir +
                  "/run' 2>'" + dir + "/err'") == 0);
    return dir + "/run";
  }();
  return run;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(read_file(path));
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

}  // namespace

TEST_CASE("cam: heat maps, overlays, cams.safetensors and index.csv, and pixel_values agree") {
  test::TempDir tmp("cam_cli");
  const std::string run = finetuned_run();
  const std::string a = dataset() + "/png/synth_000003.png", b = dataset() + "/png/synth_000001.png";
  // Default class: each image's top one.
  REQUIRE(shell(evax_bin() + " cam --checkpoint '" + run + "' --out '" + (tmp / "top") +
                "' --input '" + a + "' --input '" + b + "' 2>/dev/null") == 0);
  for (const char* f : {"heatmaps/synth_000003.png", "heatmaps/synth_000001.png",
                        "overlays/synth_000003.png", "overlays/synth_000001.png",
                        "cams.safetensors", "index.csv"})
    CHECK(fs::exists(tmp / (std::string("top/") + f)));
  const auto idx = lines_of(tmp / "top/index.csv");
  REQUIRE(idx.size() == 3);
  CHECK(idx[0] == "index,path,class,class_index,score,heatmap,overlay");
  const TensorMap top = safetensors_load(tmp / "top/cams.safetensors");
  const at::Tensor* cam = find(top, "cam");
  REQUIRE(cam != nullptr);
  CHECK(cam->sizes() == c10::IntArrayRef({2, 64, 64}));
  CHECK(cam->min().item<float>() >= 0.0f);
  CHECK(cam->max().item<float>() <= 1.0f);
  // The classes are the top logits'.
  CHECK(torch::equal(*find(top, "class"), find(top, "logits")->argmax(1)));
  // The heat map is at the input size, the overlay at the original image's.
  CHECK(image_read_unit(tmp / "top/heatmaps/synth_000003.png").cols == 64);

  // A named class and Grad-CAM++ on a folder.
  REQUIRE(shell(evax_bin() + " cam --checkpoint '" + run + "' --out '" + (tmp / "pp") +
                "' --class Nodule --method gradcam++ '" + dataset() + "/png' 2>/dev/null") == 0);
  const auto pp = lines_of(tmp / "pp/index.csv");
  CHECK(pp.size() == 73);
  CHECK_THAT(pp[1], Contains(",Nodule,2,"));

  // pixel_values of the same two images (the same input transform) → the same maps.
  REQUIRE(shell(evax_bin() + " cam --checkpoint '" + run + "' --out '" + (tmp / "nod") +
                "' --class Nodule '" + a + "' '" + b + "' 2>/dev/null") == 0);
  const LoadedClassifier c = classifier_load(run, "cpu");
  const torch::Tensor pixels = torch::stack({cam_input(image_read_unit(a), c.spec, {}),
                                             cam_input(image_read_unit(b), c.spec, {})});
  safetensors_save(tmp / "pv.safetensors", TensorMap{{"pixel_values", pixels}});
  REQUIRE(shell(evax_bin() + " cam --checkpoint '" + run + "' --input '" + (tmp / "pv.safetensors") +
                "' --out '" + (tmp / "pv_cam.safetensors") + "' --class 2 2>/dev/null") == 0);
  const TensorMap from_pixels = safetensors_load(tmp / "pv_cam.safetensors");
  const TensorMap from_images = safetensors_load(tmp / "nod/cams.safetensors");
  REQUIRE(find(from_pixels, "cam") != nullptr);
  CHECK(find(from_pixels, "cam")->scalar_type() == torch::kFloat32);
  CHECK(test::max_abs(*find(from_pixels, "cam"), *find(from_images, "cam")) <= 1e-6);
  // Not degenerate: each map spans [0, 1].
  CHECK(find(from_pixels, "cam")->amax({1, 2}).min().item<float>() > 0.99f);
  // The library on the same pixels gives the same maps too.
  const GradCamResult lib = cam_pixels(c, pixels, {2}, {});
  CHECK(test::max_abs(lib.maps, *find(from_pixels, "cam")) <= 1e-6);
}

TEST_CASE("cam: bad arguments fail with the reason") {
  test::TempDir tmp("cam_cli_bad");
  const std::string run = finetuned_run();
  const std::string a = dataset() + "/png/synth_000003.png";
  const std::string err = tmp / "err";
  auto fails = [&](const std::string& extra, int code, const std::string& text) {
    INFO(extra);
    CHECK(shell(evax_bin() + " cam --checkpoint '" + run + "' --out '" + (tmp / "o") + "' " + extra +
                " 2>'" + err + "'") == code);
    CHECK_THAT(read_file(err), Contains(text));
  };
  fails("--class Fibrosis '" + a + "'", 2, "Cardiomegaly, Effusion, Nodule");
  fails("--class 5 '" + a + "'", 2, "[0, 4]");
  fails("--layer blocks.1.norm1 '" + a + "'", 2, "blocks.<i>.norm1");
  fails("--method eigencam '" + a + "'", 2, "gradcam++");
  fails("--input '" + (tmp / "missing.png") + "'", 3, "does not exist");
  // A pixel_values input needs a class and a .safetensors output.
  safetensors_save(tmp / "pv.safetensors", TensorMap{{"pixel_values", torch::zeros({1, 3, 64, 64})}});
  fails("--input '" + (tmp / "pv.safetensors") + "'", 2, "needs --out Y.safetensors");
  CHECK(shell(evax_bin() + " cam --checkpoint '" + run + "' --input '" + (tmp / "pv.safetensors") +
              "' --out '" + (tmp / "y.safetensors") + "' 2>'" + err + "'") == 2);
  CHECK_THAT(read_file(err), Contains("needs --class"));
  // A weight file without meta.json needs --model; with it, the file must fit the model.
  fs::create_directories(tmp / "raw");
  fs::copy_file(run + "/checkpoints/best/model.safetensors", tmp / "raw/model.safetensors");
  CHECK(shell(evax_bin() + " cam --checkpoint '" + (tmp / "raw/model.safetensors") + "' --out '" +
              (tmp / "o") + "' '" + a + "' 2>'" + err + "'") == 3);
  CHECK_THAT(read_file(err), Contains("--model"));
  CHECK(shell(evax_bin() + " cam --checkpoint '" + (tmp / "raw/model.safetensors") +
              "' --model eva_x_tiny_patch16 --class 2 --out '" + (tmp / "o") + "' '" + a + "' 2>'" +
              err + "'") == 3);
  CHECK_THAT(read_file(err), Contains("blocks.1."));  // 12 blocks wanted, 1 in the file
}

TEST_CASE("cam-eval: metrics.json, boxes.csv, gallery, and the two threshold protocols") {
  test::TempDir tmp("cam_eval_cli");
  const std::string run = finetuned_run();
  const std::string manifest = dataset() + "/classification.csv";
  const std::string out = tmp / "ev";
  REQUIRE(shell(evax_bin() + " cam-eval --checkpoint '" + run + "' --manifest '" + manifest +
                "' --out '" + out + "' > '" + (tmp / "table") + "' 2>/dev/null") == 0);
  const auto m = test::read_json(out + "/metrics.json");
  CHECK(m["split"] == "test");
  CHECK(m["protocol"] == "split");
  CHECK(m["threshold_chosen_on"] == "val");
  CHECK(m["threshold"].get<double>() >= 0.01);
  CHECK(m["threshold"].get<double>() <= 0.6);
  for (const auto& part : {m["overall"], m["per_class"]["Nodule"], m["baselines"]["uniform"]["overall"],
                           m["baselines"]["centre"]["overall"]})
    for (const char* k : {"miou", "ap25", "ap50", "map", "boxes"}) CHECK(part.contains(k));
  CHECK(m["overall"]["boxes"] == 4);  // the synthetic test split's nodule boxes
  CHECK(m["baselines"]["uniform"].contains("threshold"));
  CHECK(m["settings"]["layers"][0] == "blocks.0.norm1");
  const auto boxes = lines_of(out + "/boxes.csv");
  CHECK(boxes.size() == 5);
  CHECK_THAT(boxes[0], Contains("iou,iou_uniform,iou_centre"));
  size_t pngs = 0;
  for (const auto& e : fs::directory_iterator(out + "/gallery")) pngs += e.path().extension() == ".png";
  CHECK(pngs >= 1);
  const std::string table = read_file(tmp / "table");
  CHECK_THAT(table, Contains("Nodule") && Contains("chance, uniform") && Contains("chosen on split 'val'"));

  // The paper's protocol says so.
  REQUIRE(shell(evax_bin() + " cam-eval --checkpoint '" + run + "' --manifest '" + manifest +
                "' --protocol paper --box-scale 1024 --resize bilinear --mean 0.5056 --std 0.252 --out '" +
                (tmp / "paper") + "' > '" + (tmp / "table2") + "' 2>/dev/null") == 0);
  const auto p = test::read_json(tmp / "paper/metrics.json");
  CHECK(p["protocol"] == "paper");
  CHECK(p["threshold_chosen_on"] == "test");
  CHECK_THAT(p["note"].get<std::string>(), Contains("optimistic"));
  CHECK(p["settings"]["mean"] == 0.5056);
  CHECK_THAT(read_file(tmp / "table2"), Contains("EVA-X's protocol"));

  // A fixed threshold; bad protocols fail.
  REQUIRE(shell(evax_bin() + " cam-eval --checkpoint '" + run + "' --manifest '" + manifest +
                "' --threshold 0.4 --gallery 0 --out '" + (tmp / "fixed") + "' >/dev/null 2>&1") == 0);
  CHECK(test::read_json(tmp / "fixed/metrics.json")["threshold"] == 0.4);
  CHECK(shell(evax_bin() + " cam-eval --checkpoint '" + run + "' --manifest '" + manifest +
              "' --split val --out '" + (tmp / "x") + "' 2>'" + (tmp / "err") + "'") == 2);
  CHECK_THAT(read_file(tmp / "err"), Contains("protocol paper"));
  CHECK(shell(evax_bin() + " cam-eval --checkpoint '" + run + "' --manifest '" + manifest +
              "' --box-scale 512 --out '" + (tmp / "x") + "' 2>'" + (tmp / "err") + "'") == 2);
  CHECK_THAT(read_file(tmp / "err"), Contains("'512'"));
}

TEST_CASE("cam_evaluate: the library call the demo makes, consistent with its boxes") {
  const std::string run = finetuned_run();
  const LoadedClassifier c = classifier_load(run, "cpu");
  const Manifest m = manifest_load(dataset() + "/classification.csv");
  const CamEvalResult r = cam_evaluate(c, m, CamEvalOptions().gallery(2));
  REQUIRE(r.boxes.size() == 4);
  CHECK(r.gallery.size() == 2);
  CHECK(r.threshold_chosen_on == "val");
  CHECK(r.threshold_boxes == 1);
  // The overall scores are those of the per-box IoUs at the chosen thresholds.
  std::vector<double> model, uniform, centre;
  for (const CamBox& b : r.boxes) {
    model.push_back(b.iou), uniform.push_back(b.iou_uniform), centre.push_back(b.iou_centre);
    CHECK(b.cls == "Nodule");
    CHECK(b.rect.area() == static_cast<int64_t>(b.box.w * b.box.h));  // 64 px images, 64 px maps
  }
  CHECK(localisation_scores(model).miou == r.model.report.overall.miou);
  CHECK(localisation_scores(uniform).miou == r.uniform.report.overall.miou);
  CHECK(localisation_scores(centre).map == r.centre.report.overall.map);
  // The uniform map scores each box's share of the image.
  for (const CamBox& b : r.boxes) CHECK(b.iou_uniform == Approx(b.box.w * b.box.h / 4096.0));
  const std::string line = cam_eval_headline(r);
  CHECK_THAT(line, Contains("Nodule on test (4 boxes): mAP") && Contains("vs chance") &&
                       Contains("chosen on val"));
  test::TempDir tmp("cam_gallery");
  CHECK(cam_gallery_write(r, tmp / "g").size() == 2);
}
