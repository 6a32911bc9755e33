#include "evax/segment/evaluation.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "evax/core/csv.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/eval/report_files.h"

namespace evax {
namespace {

std::string num(const nlohmann::ordered_json& v) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v.get<double>());
  return buf;
}

std::string exact(double v) { return std::isnan(v) ? "" : format_double_exact(v); }

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
  log_info(split, " split (", r.images, " images), masks at the original resolution:\n",
           segment_metrics_table(m));
  log_info("wrote ", dir, "/{metrics.json,per_class.csv,per_image.csv}");
  return m;
}

}  // namespace evax
