// SIIM-ACR pneumothorax: RLE rows merged into one mask per image.
#include <string>
#include <unordered_map>
#include <vector>

#include "evax/data/adapters_internal.h"

namespace evax {

using namespace adapters_detail;

namespace {

struct RleItem {
  std::string id;
  int64_t line = 0;  // first row of the image
  std::vector<RleRuns> runs;
  bool positive = false;
};

}  // namespace

ManifestSummary build_siim_manifest(const MaskAdapterOptions& o) {
  // train-rle.csv: stage 1, and the stage-2 re-release EVA-X used (relative RLE);
  // stage_2_train.csv: Kaggle's stage-2 file (standard RLE).
  const MaskSource src = open_mask_source(o, {"train-rle.csv", "stage_2_train.csv"}, "siim");
  const std::string& csv = src.csv;
  RleFormat format = o.rle;
  if (format == RleFormat::kAuto)
    format = fs::path(csv).filename().string().rfind("stage_2_train.csv", 0) == 0
                 ? RleFormat::kStandard
                 : RleFormat::kRelative;
  const int64_t total = o.mask_size * o.mask_size;

  const CsvTable t = read_csv_table(csv);
  const size_t c_id = t.col("ImageId"), c_rle = t.col("EncodedPixels");
  std::vector<RleItem> items;
  std::unordered_map<std::string, size_t> item_of;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string id = t.cell(rec, c_id), rle = t.cell(rec, c_rle);
    if (id.empty()) raise<DataError>(at(csv, rec.line), "empty 'ImageId'");
    const auto [it, fresh] = item_of.emplace(id, items.size());
    if (fresh) items.push_back({id, rec.line, {}, false});
    RleItem& item = items[it->second];
    if (rle == "-1") continue;
    item.runs.push_back(
        parse_rle(rle, total, format, at(csv, rec.line) + "column 'EncodedPixels': "));
    item.positive = true;
  }

  return write_mask_manifest<RleItem>(o, src, "siim", "image", "Pneumothorax", items, item_of,
                                      [](const RleItem& item, cv::Mat& mask) {
                                        for (const auto& runs : item.runs) paint_runs(mask, runs);
                                      });
}

}  // namespace evax
