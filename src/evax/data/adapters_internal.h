// Internal to the dataset adapters (adapters_*.cpp, rle.cpp): the helpers they share. Not part of
// the evax API; adapters.h is.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <opencv2/core.hpp>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "evax/core/error.h"
#include "evax/data/adapters.h"
#include "evax/data/manifest.h"

namespace evax::adapters_detail {

namespace fs = std::filesystem;

constexpr float kMissing = std::numeric_limits<float>::quiet_NaN();

// ---- Text ---------------------------------------------------------------------------------------

std::string trim(const std::string& s);
std::string lower(std::string s);
std::string upper(std::string s);
std::string join(const std::vector<std::string>& v, const char* sep = ", ");
// Splits on runs of blanks (the list files use single spaces; runs are tolerated).
std::vector<std::string> split_blanks(const std::string& s);
bool all_digits(const std::string& s);
// Shortest faithful text of a box coordinate.
std::string fmt_num(double v);
bool parse_double(const std::string& s, double* out);
// "file:line: ", the prefix of every parse error.
std::string at(const std::string& file, int64_t line);
// ConfigError unless split is train, val or test.
void check_split(const std::string& split, const char* what);

// ---- Files and folders --------------------------------------------------------------------------

fs::path require_root(const std::string& root, const char* dataset);
bool is_file(const fs::path& p);
std::string normal_abs(const fs::path& p);
// Folder where an adapter writes masks for the manifest `out`.
fs::path masks_dir_of(const std::string& out);
// The first file named one of `names` (or `<name>.gz`) in root or up to `depth` folders below
// it, shallowest first, folders in name order; "" when none.
std::string find_file(const fs::path& root, const std::vector<std::string>& names, int depth);
// find_file, DataError when none.
std::string require_file(const fs::path& root, const std::vector<std::string>& names, int depth,
                         const char* dataset);
// The folder holding a dataset's EVA-X lists: `dir/sub` when it has `probe`, else `dir`.
fs::path lists_dir(const std::string& dir, const char* sub, const std::string& probe);
void make_dirs(const fs::path& dir);
void write_mask_png(const fs::path& path, const cv::Mat& mask);
// Runs fn(i) for i in [0, n) on a few threads; rethrows the exception of the lowest failing i.
void parallel_for_n(int64_t n, const std::function<void(int64_t)>& fn);

// Image files under a root, by file name or stem.
struct FileIndex {
  std::string root;
  std::unordered_map<std::string, std::string> by_key;
  const std::string* find(const std::string& key) const {
    const auto it = by_key.find(key);
    return it == by_key.end() ? nullptr : &it->second;
  }
};
// Scans `root` once (following folder links) for files whose lower-case extension is in `exts`
// (earlier = preferred when two files share a key), skipping the folder `skip`.
FileIndex index_files(const fs::path& root, const std::vector<std::string>& exts, bool key_is_stem,
                      const fs::path& skip, const char* dataset);
// For an image missing from `images`: counts it in *skipped when skipping missing images, else
// DataError `where` + `what` + " under '<root>'".
void skip_missing_image(const AdapterOptions& o, const FileIndex& images, const std::string& where,
                        const std::string& what, int64_t* skipped);
// Whether an image exists; when it does not, DataError naming `where` unless skipping.
bool image_present(const std::string& path, const AdapterOptions& o, const std::string& where);

// ---- Metadata files -----------------------------------------------------------------------------

// A CSV with a header row; columns by trimmed name (empty names, e.g. a trailing comma, ignored).
struct CsvTable {
  std::string file;
  std::vector<CsvRecord> records;  // [0] is the header
  std::vector<std::string> names;
  std::unordered_map<std::string, size_t> cols;

  int64_t find(const std::string& name) const {
    const auto it = cols.find(name);
    return it == cols.end() ? -1 : static_cast<int64_t>(it->second);
  }
  // Index of column `name`; DataError listing the columns when there is none.
  size_t col(const std::string& name) const;
  // Trimmed field c of a record; DataError when the record is too short.
  std::string cell(const CsvRecord& r, size_t c) const;
};
CsvTable read_csv_table(const std::string& path);

struct TextLine {
  int64_t line;
  std::string text;  // trimmed, never empty
};
// Non-blank lines of a text file (CR tolerated; a missing final newline is fine).
std::vector<TextLine> read_lines(const std::string& path);
// read_lines of a one-id-per-line file; DataError for a line with more tokens or a repeated id.
std::vector<TextLine> read_id_lines(const std::string& path);

// An id of EVA-X's segmentation lists with its split.
struct ListedId {
  std::string id, split, where;  // where = "file:line: "
};
// EVA-X's segmentation lists (train.txt, test.txt in `dir` or `dir/sub`) in list order.
std::vector<ListedId> read_seg_lists(const std::string& dir, const char* sub);

// ---- Writing manifests --------------------------------------------------------------------------

struct OutRow {
  std::string path;  // absolute (or relative to the working folder)
  std::string split, patient, view;
  std::vector<float> labels;  // NaN = missing
  std::string mask;           // "" = none
  std::string boxes;
};

// Collects rows, then writes the manifest atomically with the optional view, mask and boxes
// columns.
class ManifestWriter {
 public:
  ManifestWriter(std::string out, std::vector<std::string> labels, bool view, bool mask,
                 bool boxes);
  void add(OutRow r) { rows_.push_back(std::move(r)); }
  size_t size() const { return rows_.size(); }
  ManifestSummary write(int64_t skipped, int64_t masks);

 private:
  std::string out_;
  std::vector<std::string> labels_;
  bool view_, mask_, boxes_;
  std::vector<OutRow> rows_;
};

// ---- Boxes (RSNA, NIH) --------------------------------------------------------------------------

// A box as read from an official CSV (double: NIH coordinates carry 12 decimals).
struct SrcBox {
  std::string label;
  double x = 0, y = 0, w = 0, h = 0;
};

// An image with its boxes, from the CSV rows naming it.
struct BoxItem {
  std::string id;
  int64_t line = 0;  // first row of the image
  bool positive = false;
  std::vector<SrcBox> boxes;
};

// The manifest's boxes cell: `label:x,y,w,h` joined by ';'.
std::string boxes_text(const std::vector<SrcBox>& boxes);

// ---- RLE (rle.cpp) ------------------------------------------------------------------------------

using RleRuns = std::vector<std::pair<int64_t, int64_t>>;  // [start, start + length), 0-based

// Runs of an RLE over `total` pixels in a concrete `format`; DataError naming `where`.
RleRuns parse_rle(const std::string& rle, int64_t total, RleFormat format,
                  const std::string& where);
// Sets run pixels to 255; pixel k is column k / rows, row k % rows (column-major).
void paint_runs(cv::Mat& mask, const RleRuns& runs);

// ---- Mask datasets (SIIM, RSNA) -----------------------------------------------------------------

// Where a mask dataset reads from and writes its masks to.
struct MaskSource {
  fs::path root;
  std::string csv;     // the label CSV
  fs::path out_masks;  // masks_dir_of(out)
  FileIndex images;    // .dcm, .png, .jpg, .jpeg by stem
};
// Checks root and mask size, finds the first of `csv_names` and indexes the images.
MaskSource open_mask_source(const MaskAdapterOptions& o, const std::vector<std::string>& csv_names,
                            const char* dataset);

// The manifest and masks of a mask dataset whose items (RleItem, BoxItem: id, line, positive) are
// `items`, indexed by id in `item_of`. Rows: the EVA-X split lists' items when given (the rest
// skipped), else every item (positives only on request) as train; label 1 when positive.
// paint(item, mask) draws an item's mask onto a zero mask_size² image; boxes(item), when given,
// fills a boxes column.
template <class Item>
ManifestSummary write_mask_manifest(const MaskAdapterOptions& o, const MaskSource& src,
                                    const char* dataset, const char* noun,
                                    const std::string& label, const std::vector<Item>& items,
                                    const std::unordered_map<std::string, size_t>& item_of,
                                    const std::function<void(const Item&, cv::Mat&)>& paint,
                                    const std::function<std::string(const Item&)>& boxes = {}) {
  int64_t skipped = 0;
  std::vector<std::pair<size_t, std::string>> chosen;  // (item, split)
  if (!o.split_lists.empty()) {
    for (const ListedId& l : read_seg_lists(o.split_lists, dataset)) {
      const auto it = item_of.find(l.id);
      if (it == item_of.end())
        raise<DataError>(l.where, "listed ", noun, " '", l.id, "' is not in ", src.csv);
      chosen.emplace_back(it->second, l.split);
    }
    skipped = static_cast<int64_t>(items.size() - chosen.size());
  } else {
    for (size_t i = 0; i < items.size(); ++i) {
      if (o.positives_only && !items[i].positive) ++skipped;
      else chosen.emplace_back(i, "train");
    }
  }

  ManifestWriter w(o.out, {label}, false, true, static_cast<bool>(boxes));
  std::vector<size_t> written;
  for (const auto& [i, split] : chosen) {
    const Item& item = items[i];
    const std::string* path = src.images.find(item.id);
    if (!path) {
      skip_missing_image(o, src.images, at(src.csv, item.line),
                         str_cat("no image named '", item.id, "' (.dcm, .png or .jpg)"),
                         &skipped);
      continue;
    }
    written.push_back(i);
    w.add({*path, split, item.id, "", {item.positive ? 1.0f : 0.0f},
           (src.out_masks / (item.id + ".png")).string(), boxes ? boxes(item) : ""});
  }
  make_dirs(src.out_masks);
  const int side = static_cast<int>(o.mask_size);
  parallel_for_n(static_cast<int64_t>(written.size()), [&](int64_t k) {
    const Item& item = items[written[static_cast<size_t>(k)]];
    cv::Mat mask = cv::Mat::zeros(side, side, CV_8U);
    paint(item, mask);
    write_mask_png(src.out_masks / (item.id + ".png"), mask);
  });
  return w.write(skipped, static_cast<int64_t>(written.size()));
}

}  // namespace evax::adapters_detail
