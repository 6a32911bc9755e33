// A small synthetic run directory for the report tests: a finetuning-like run (config with origins,
// environment, status, metrics.csv, two evaluations with ROC PNGs, checkpoints with best/) and a
// nested segmentation run with an overlay gallery. Strings carry markup to test escaping.
#pragma once

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <filesystem>
#include <sstream>
#include <string>

#include "evax/core/files.h"
#include "evax/io/image.h"

namespace evax::test {

/// Markup that must never reach the page unescaped.
inline const std::string kHostile = "<b onmouseover=\"x\">Nod&ule</b>";

inline void write_png(const std::string& path, int w, int h, int seed) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  cv::Mat m(h, w, CV_8UC3);
  cv::randu(m, cv::Scalar::all(seed % 50), cv::Scalar::all(200 + seed % 50));
  image_write_png(path, m);
}

inline void write_meta(const std::string& dir, int64_t step, const std::string& why, double value) {
  nlohmann::json m = {{"step", step}, {"epoch", step / 10}, {"why", why}, {"metric", "mauc"},
                      {"value", value}, {"run", {{"total_steps", 30}}}};
  std::filesystem::create_directories(dir);
  write_file_atomic(dir + "/meta.json", m.dump());
}

/// Builds the fixture at `dir`; `steps` rows of metrics.csv (every 10 an evaluation). Returns dir.
inline std::string make_report_fixture(const std::string& dir, int steps = 30) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  write_file_atomic(dir + "/config.yaml",
                    "model:\n  name: eva_x_tiny_patch16\ndata:\n  classes: [Cardiomegaly, '" +
                        kHostile + "']\noptimizer:\n  lr: 0.001\ntrain:\n  epochs: 3\n"
                        "eval:\n  test_split: test\npaper:\n  table: T\n  metric: mauc\n"
                        "  value: 82.4\n  source: S\n");
  write_file_atomic(dir + "/config_origins.json",
                    R"({"model/name": "configs/x.yaml:2", "data/classes": "configs/x.yaml:4",
                        "optimizer/lr": "--set optimizer.lr=0.001", "train/epochs": "configs/x.yaml:7"})");
  write_file_atomic(dir + "/environment.json",
                    R"({"evax": {"version": "0.1.0", "commit": "abc"}, "libtorch": "2.12.1",
                        "cuda": {"available": false}, "ranks": {"world_size": 1}})");
  write_file_atomic(dir + "/log.txt", "step 1\nwarning: " + kHostile + "\n");
  std::ostringstream csv;
  csv << "step,epoch,loss,lr,images_per_s,grad_norm,eval/auc/Cardiomegaly,eval/loss,eval/mauc\n";
  for (int s = 1; s <= steps; ++s) {
    csv << s << "," << s / 10 << "," << 1.0 / s + (s % 7) * 0.01 << "," << 1e-3 * (1 - double(s) / steps)
        << "," << 100 + s % 13 << "," << 0.5 + (s % 5) * 0.1;
    if (s % 10 == 0) csv << "," << 0.8 + s * 1e-6 << "," << 0.3 << "," << 0.81;
    else csv << ",,,";
    csv << "\n";
  }
  write_file_atomic(dir + "/metrics.csv", csv.str());
  const nlohmann::ordered_json test = nlohmann::ordered_json::parse(
      "{\"task\": \"multilabel\", \"split\": \"test\", \"samples\": 400, \"classes\": "
      "[\"Cardiomegaly\", " + nlohmann::json(kHostile).dump() + "], \"auc\": {\"Cardiomegaly\": "
      "0.96639410933687, " + nlohmann::json(kHostile).dump() + ": 0.73911764705882}, \"mauc\": "
      "0.85275587819785, \"threshold\": 0.5, \"sensitivity\": {\"Cardiomegaly\": 0.71830985915493, " +
      nlohmann::json(kHostile).dump() + ": null}, \"at_youden\": {\"threshold\": {\"Cardiomegaly\": "
      "0.44231581687927}, \"counts\": {\"Cardiomegaly\": {\"tp\": 52, \"fp\": 12}}}, \"confusion\": "
      "[[3, 1], [0, 4]], \"notes\": {\"a\": \"b <i>\"}}");
  fs::create_directories(dir + "/eval/test/roc");
  write_file_atomic(dir + "/eval/test/metrics.json", test.dump(2));
  write_png(dir + "/eval/test/roc/all.png", 120, 120, 1);
  write_png(dir + "/eval/test/roc/00_Cardiomegaly.png", 120, 120, 2);
  fs::create_directories(dir + "/eval/val");
  write_file_atomic(dir + "/eval/val/metrics.json",
                    R"({"task": "multiclass", "split": "val", "accuracy": 0.9125, "mauc": null})");
  write_meta(dir + "/checkpoints/step-00000010", 10, "best", 0.81);
  write_meta(dir + "/checkpoints/step-00000020", 20, "epoch", 0.80);
  write_meta(dir + "/checkpoints/best", 10, "best", 0.81);
  fs::create_directories(dir + "/checkpoints/step-00000030.tmp");  // an interrupted write: ignored
  write_file_atomic(dir + "/status.json", R"({"state": "finished"})");
  // A nested segmentation run with an overlay gallery.
  const std::string seg = dir + "/seg";
  fs::create_directories(seg + "/eval/test");
  write_file_atomic(seg + "/config.yaml", "segment: {}\nmodel: {channels: 16}\n");
  write_file_atomic(seg + "/eval/test/metrics.json",
                    R"({"split": "test", "classes": ["background", "lungs"], "mIoU": 0.157,
                        "mDice": 0.2632839082782366, "mDice_fg": 0.38,
                        "per_class": {"background": {"iou": 0.0768, "dice": 0.1427},
                                      "lungs": {"iou": 0.2374, "dice": null}}})");
  for (int i = 0; i < 5; ++i) write_png(seg + "/eval/test/overlays/" + std::to_string(i) + ".png", 300, 200, i);
  return dir;
}

}  // namespace evax::test
