#include "evax/segment/evaluation.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "evax/core/csv.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/eval/report_files.h"
#include "evax/io/image.h"
#include "evax/segment/predict.h"

namespace evax {
namespace {

std::string num(const nlohmann::ordered_json& v) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v.get<double>());
  return buf;
}

std::string exact(double v) { return std::isnan(v) ? "" : format_double_exact(v); }

// Mean foreground Dice of an image over the classes where it is defined (NaN: none).
double mean_dice(const SegImageScore& s) {
  double sum = 0;
  int n = 0;
  for (double d : s.dice)
    if (!std::isnan(d)) sum += d, ++n;
  return n ? sum / n : std::nan("");
}

// The worst and the best images by mean Dice (half each; all when there are few), predicted
// again and drawn with the label's outline into `dir`/overlays/, with an index.csv.
void write_overlays(SegmentTask& task, const std::string& split,
                    const std::vector<SegImageScore>& per_image, const std::string& dir) {
  const int64_t want = task.options().overlays;
  std::vector<std::pair<double, int64_t>> scored;
  for (size_t i = 0; i < per_image.size(); ++i) {
    const double d = mean_dice(per_image[i]);
    if (!std::isnan(d)) scored.emplace_back(d, static_cast<int64_t>(i));
  }
  if (want <= 0 || scored.empty()) return;
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::pair<std::string, size_t>> picks;  // (label, index into scored)
  const size_t n = scored.size(), worst = std::min<size_t>(n, static_cast<size_t>((want + 1) / 2));
  for (size_t k = 0; k < worst; ++k) picks.emplace_back("worst", k);
  const size_t best = std::min<size_t>(n - worst, static_cast<size_t>(want) - worst);
  for (size_t k = 0; k < best; ++k) picks.emplace_back("best", n - 1 - k);
  const std::string out = dir + "/overlays";
  std::filesystem::create_directories(out);
  std::string index = "file,path,mean_dice\n";
  for (size_t k = 0; k < picks.size(); ++k) {
    const auto& [what, at] = picks[k];
    const SegmentTask::RowPrediction r = task.predict_row(split, scored[at].second);
    char name[64];
    std::snprintf(name, sizeof name, "%s-%zu_dice%.3f_", what.c_str(),
                  what == "worst" ? k + 1 : k - worst + 1, scored[at].first);
    const std::string file = name + std::filesystem::path(r.path).stem().string() + ".png";
    image_write_png(out + "/" + file, segmentation_truth_overlay(r.unit, r.pred.classes, r.label));
    index += csv_field(file) + "," + csv_field(r.path) + "," + exact(scored[at].first) + "\n";
  }
  write_file_atomic(out + "/index.csv", index);
}

}  // namespace

std::string segment_metrics_table(const nlohmann::ordered_json& m) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-20s %8s %8s %8s\n", "class", "IoU", "Dice", "Acc");
  out += line;
  for (const auto& [name, c] : m.at("per_class").items()) {
    std::snprintf(line, sizeof line, "%-20s %8s %8s %8s\n", name.substr(0, 20).c_str(),
                  num(c.at("iou")).c_str(), num(c.at("dice")).c_str(), num(c.at("acc")).c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "%-20s %8s %8s %8s\n", "mean (with bg)", num(m.at("mIoU")).c_str(),
                num(m.at("mDice")).c_str(), num(m.at("mAcc")).c_str());
  out += line;
  std::snprintf(line, sizeof line, "%-20s %8s %8s\n", "mean (foreground)",
                num(m.at("mIoU_fg")).c_str(), num(m.at("mDice_fg")).c_str());
  out += line;
  return out;
}

nlohmann::ordered_json segment_evaluate_split(SegmentTask& task, const std::string& split,
                                              const std::string& dir, bool write) {
  std::vector<SegImageScore> per_image;
  SegMetricsResult r = task.evaluate_split(split, &per_image);
  const SegmenterSpec spec = task.spec();
  nlohmann::ordered_json m;
  m["split"] = split;
  const nlohmann::ordered_json all = r.to_json();  // items() must not outlive it
  for (const auto& [k, v] : all.items()) m[k] = v;
  m["threshold"] = spec.net.out_channels() == 1 ? nlohmann::ordered_json(spec.inference.threshold())
                                                : nlohmann::ordered_json(nullptr);
  m["inference"] = spec.inference.mode();
  if (!write) return m;
  std::filesystem::create_directories(dir);
  write_file_atomic(dir + "/metrics.json", m.dump(2) + "\n");
  std::string pc = "class,iou,dice,acc,intersect,union,pred_area,label_area\n";
  for (size_t c = 0; c < r.classes.size(); ++c)
    pc += csv_field(r.classes[c]) + "," + exact(r.iou[c]) + "," + exact(r.dice[c]) + "," +
          exact(r.acc[c]) + "," + std::to_string(r.intersect[c]) + "," +
          std::to_string(r.union_area[c]) + "," + std::to_string(r.pred_area[c]) + "," +
          std::to_string(r.label_area[c]) + "\n";
  write_file_atomic(dir + "/per_class.csv", pc);
  std::string pi = "path";
  for (size_t c = 1; c < r.classes.size(); ++c) pi += "," + csv_field("dice_" + r.classes[c]);
  pi += "\n";
  for (const auto& s : per_image) {
    pi += csv_field(s.id);
    for (double d : s.dice) pi += "," + exact(d);
    pi += "\n";
  }
  write_file_atomic(dir + "/per_image.csv", pi);
  write_overlays(task, split, per_image, dir);
  log_info(split, " split (", r.images, " images), masks at the original resolution:\n",
           segment_metrics_table(m));
  log_info("wrote ", dir, "/{metrics.json,per_class.csv,per_image.csv",
           task.options().overlays > 0 ? ",overlays/}" : "}");
  return m;
}

}  // namespace evax
