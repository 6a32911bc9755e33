// RSNA pneumonia: boxes as a boxes column and one filled mask per image.
#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include "evax/data/adapters_internal.h"

namespace evax {

using namespace adapters_detail;

ManifestSummary build_rsna_manifest(const MaskAdapterOptions& o) {
  const MaskSource src =
      open_mask_source(o, {"stage_2_train_labels.csv", "stage_1_train_labels.csv"}, "rsna");
  const std::string& csv = src.csv;

  const CsvTable t = read_csv_table(csv);
  const size_t c_id = t.col("patientId"), c_target = t.col("Target");
  const size_t c_box[4] = {t.col("x"), t.col("y"), t.col("width"), t.col("height")};
  const char* box_names[4] = {"x", "y", "width", "height"};
  std::vector<BoxItem> items;
  std::unordered_map<std::string, size_t> item_of;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string where = at(csv, rec.line);
    const std::string id = t.cell(rec, c_id), target = t.cell(rec, c_target);
    if (id.empty()) raise<DataError>(where, "empty 'patientId'");
    if (target != "0" && target != "1")
      raise<DataError>(where, "column 'Target': bad value '", target, "' (want 0 or 1)");
    const bool positive = target == "1";
    const auto [it, fresh] = item_of.emplace(id, items.size());
    if (fresh) items.push_back({id, rec.line, positive, {}});
    BoxItem& item = items[it->second];
    if (item.positive != positive)
      raise<DataError>(where, "patient '", id, "' has Target ", target, " here but ",
                       item.positive ? 1 : 0, " on line ", item.line);
    double v[4];
    for (int k = 0; k < 4; ++k) {
      const std::string s = t.cell(rec, c_box[k]);
      if (!positive) {
        if (!s.empty())
          raise<DataError>(where, "column '", box_names[k], "': value '", s,
                           "' on a Target 0 row (want empty)");
        continue;
      }
      if (!parse_double(s, &v[k]))
        raise<DataError>(where, "column '", box_names[k], "': bad value '", s,
                         "' (want a number)");
    }
    if (!positive) continue;
    if (!(v[2] > 0 && v[3] > 0))
      raise<DataError>(where, "box width and height must be > 0, got ", fmt_num(v[2]), " x ",
                       fmt_num(v[3]));
    item.boxes.push_back({"Pneumonia", v[0], v[1], v[2], v[3]});
  }

  // Pixels [x, x+w) × [y, y+h), rounded and clipped to the mask.
  const auto paint = [](const BoxItem& item, cv::Mat& mask) {
    const int side = mask.rows;
    for (const SrcBox& b : item.boxes) {
      const auto clampi = [side](double v) {
        return static_cast<int>(std::min<double>(side, std::max(0.0, std::round(v))));
      };
      const int x0 = clampi(b.x), x1 = clampi(b.x + b.w);
      const int y0 = clampi(b.y), y1 = clampi(b.y + b.h);
      if (x1 > x0 && y1 > y0) mask(cv::Rect(x0, y0, x1 - x0, y1 - y0)).setTo(255);
    }
  };
  return write_mask_manifest<BoxItem>(o, src, "rsna", "patient", "Pneumonia", items, item_of,
                                      paint,
                                      [](const BoxItem& item) { return boxes_text(item.boxes); });
}

}  // namespace evax
