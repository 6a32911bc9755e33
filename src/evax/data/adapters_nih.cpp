// ChestX-ray14 (NIH): the classification manifest and the BBox_List boxes manifest.
#include <algorithm>
#include <unordered_map>
#include <utility>

#include "evax/core/strings.h"
#include "evax/data/adapters_internal.h"

namespace evax {

using namespace adapters_detail;

const std::vector<std::string> kCxr14Labels = {
    "Atelectasis", "Cardiomegaly", "Effusion",      "Infiltration", "Mass",
    "Nodule",      "Pneumonia",    "Pneumothorax",  "Consolidation", "Edema",
    "Emphysema",   "Fibrosis",     "Pleural_Thickening", "Hernia"};

namespace {

struct Cxr14Entry {
  std::string image, patient, view;
  std::vector<float> labels;
  int64_t line = 0;
};

std::string pad8(const std::string& digits) {
  return digits.size() >= 8 ? digits : std::string(8 - digits.size(), '0') + digits;
}

// Patient of a CXR14 file name (`00000001_000.png` → 00000001); the stem when it has no '_'.
std::string cxr14_patient_from_name(const std::string& name) {
  const std::string stem = fs::path(name).stem().string();
  const size_t u = stem.find('_');
  return u == std::string::npos ? stem : stem.substr(0, u);
}

std::vector<Cxr14Entry> read_data_entry(const std::string& path) {
  const CsvTable t = read_csv_table(path);
  const size_t c_img = t.col("Image Index"), c_lab = t.col("Finding Labels");
  const size_t c_pid = t.col("Patient ID"), c_view = t.col("View Position");
  std::vector<Cxr14Entry> out;
  std::unordered_map<std::string, int64_t> seen;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    Cxr14Entry e;
    e.line = rec.line;
    e.image = t.cell(rec, c_img);
    if (e.image.empty()) raise<DataError>(at(path, rec.line), "empty 'Image Index'");
    const auto [it, fresh] = seen.emplace(e.image, rec.line);
    if (!fresh)
      raise<DataError>(at(path, rec.line), "image '", e.image, "' repeated (first on line ",
                       it->second, ")");
    const std::string pid = t.cell(rec, c_pid);
    if (!all_digits(pid))
      raise<DataError>(at(path, rec.line), "column 'Patient ID': bad value '", pid,
                       "' (want digits)");
    e.patient = pad8(pid);
    e.view = upper(t.cell(rec, c_view));
    e.labels.assign(kCxr14Labels.size(), 0.0f);
    const std::string findings = t.cell(rec, c_lab);
    for (const std::string& raw : split_on(findings, '|')) {
      const std::string f = trim(raw);
      if (f == "No Finding") {
        if (findings != "No Finding")
          raise<DataError>(at(path, rec.line), "column 'Finding Labels': 'No Finding' together "
                           "with findings in '", findings, "'");
        continue;
      }
      const auto k = std::find(kCxr14Labels.begin(), kCxr14Labels.end(), f);
      if (k == kCxr14Labels.end())
        raise<DataError>(at(path, rec.line), "column 'Finding Labels': unknown finding '", f,
                         "' (known: ", join(kCxr14Labels), ", No Finding)");
      e.labels[static_cast<size_t>(k - kCxr14Labels.begin())] = 1.0f;
    }
    out.push_back(std::move(e));
  }
  return out;
}

// Data_Entry_2017.csv, when under root (both adapters work without it).
struct DataEntry {
  std::string csv;  // "" when none
  std::vector<Cxr14Entry> rows;
  std::unordered_map<std::string, size_t> row_of;  // by image name

  // Patient and view of an image: from its row, else the patient of its name and no view.
  std::pair<std::string, std::string> patient_view(const std::string& image) const {
    const auto e = row_of.find(image);
    if (e == row_of.end()) return {cxr14_patient_from_name(image), ""};
    return {rows[e->second].patient, rows[e->second].view};
  }
};

DataEntry load_data_entry(const fs::path& root) {
  DataEntry d;
  d.csv = find_file(root, {"Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"}, 1);
  if (!d.csv.empty()) d.rows = read_data_entry(d.csv);
  for (size_t i = 0; i < d.rows.size(); ++i) d.row_of.emplace(d.rows[i].image, i);
  return d;
}

}  // namespace

std::vector<Cxr14ListEntry> read_cxr14_split_list(const std::string& path) {
  std::vector<Cxr14ListEntry> out;
  std::unordered_map<std::string, int64_t> seen;
  for (const TextLine& l : read_lines(path)) {
    const std::vector<std::string> f = split_blanks(l.text);
    if (f.size() != 1 + kCxr14Labels.size())
      raise<DataError>(at(path, l.line), f.size(), " fields in '", l.text, "' (want a file name "
                       "and ", kCxr14Labels.size(), " labels 0/1)");
    Cxr14ListEntry e;
    e.image = f[0];
    e.line = l.line;
    for (size_t k = 1; k < f.size(); ++k) {
      if (f[k] != "0" && f[k] != "1")
        raise<DataError>(at(path, l.line), "label ", k, " (", kCxr14Labels[k - 1], ") is '", f[k],
                         "' (want 0 or 1)");
      e.labels.push_back(f[k] == "1" ? 1.0f : 0.0f);
    }
    const auto [it, fresh] = seen.emplace(e.image, l.line);
    if (!fresh)
      raise<DataError>(at(path, l.line), "image '", e.image, "' repeated (first on line ",
                       it->second, ")");
    out.push_back(std::move(e));
  }
  return out;
}

ManifestSummary build_cxr14_manifest(const AdapterOptions& o) {
  const fs::path root = require_root(o.root, "cxr14");
  const DataEntry entries = load_data_entry(root);
  const FileIndex images = index_files(root, {".png"}, false, masks_dir_of(o.out), "cxr14");

  ManifestWriter w(o.out, kCxr14Labels, true, false, false);
  int64_t skipped = 0;
  const auto add = [&](const std::string& image, const std::string& split,
                       const std::vector<float>& labels, const std::string& where) {
    const std::string* path = images.find(image);
    if (!path) {
      skip_missing_image(o, images, where, str_cat("image '", image, "' not found"), &skipped);
      return;
    }
    auto [patient, view] = entries.patient_view(image);
    w.add({*path, split, std::move(patient), std::move(view), labels, "", ""});
  };

  if (!o.split_lists.empty()) {
    const fs::path dir = lists_dir(o.split_lists, "cxr14", "train_official.txt");
    std::unordered_map<std::string, std::string> listed;  // image -> file:line
    const std::pair<const char*, const char*> files[] = {{"train_official.txt", "train"},
                                                         {"val_official.txt", "val"},
                                                         {"test_official.txt", "test"}};
    for (const auto& [name, split] : files) {
      const std::string file = (dir / name).string();
      for (const Cxr14ListEntry& e : read_cxr14_split_list(file)) {
        const std::string where = at(file, e.line);
        const auto [it, fresh] = listed.emplace(e.image, where);
        if (!fresh)
          raise<DataError>(where, "image '", e.image, "' is also listed at ", it->second);
        add(e.image, split, e.labels, where);
      }
    }
    for (const Cxr14Entry& e : entries.rows) skipped += listed.count(e.image) ? 0 : 1;
  } else {
    if (entries.csv.empty())
      raise<DataError>("cxr14: no Data_Entry_2017.csv in '", root.string(),
                       "' (or pass EVA-X split lists with --split-lists)");
    const std::string test_list = require_file(root, {"test_list.txt"}, 1, "cxr14");
    const std::string trainval_list = require_file(root, {"train_val_list.txt"}, 1, "cxr14");
    std::unordered_map<std::string, std::string> split_of;
    for (const auto& name : read_id_list(trainval_list)) split_of.emplace(name, "train");
    for (const auto& name : read_id_list(test_list)) {
      const auto [it, fresh] = split_of.emplace(name, "test");
      if (!fresh)
        raise<DataError>(test_list, ": image '", name, "' is also in ", trainval_list);
    }
    for (const Cxr14Entry& e : entries.rows) {
      const auto s = split_of.find(e.image);
      if (s == split_of.end())
        raise<DataError>(at(entries.csv, e.line), "image '", e.image,
                         "' is in neither train_val_list.txt nor test_list.txt");
      add(e.image, s->second, e.labels, at(entries.csv, e.line));
    }
  }
  return w.write(skipped, 0);
}

ManifestSummary build_nih_bbox_manifest(const AdapterOptions& o) {
  const fs::path root = require_root(o.root, "nih-bbox");
  const std::string csv = require_file(root, {"BBox_List_2017.csv"}, 1, "nih-bbox");
  const DataEntry entries = load_data_entry(root);
  const FileIndex images = index_files(root, {".png"}, false, masks_dir_of(o.out), "nih-bbox");

  const CsvTable t = read_csv_table(csv);
  const size_t c_img = t.col("Image Index"), c_label = t.col("Finding Label");
  const size_t c_x = t.col("Bbox [x");
  std::vector<BoxItem> items;
  std::unordered_map<std::string, size_t> item_of;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string where = at(csv, rec.line);
    const std::string image = t.cell(rec, c_img);
    if (image.empty()) raise<DataError>(where, "empty 'Image Index'");
    std::string label = t.cell(rec, c_label);
    if (label == "Infiltrate") label = "Infiltration";  // BBox spelling → CXR14 column name
    if (std::find(kCxr14Labels.begin(), kCxr14Labels.end(), label) == kCxr14Labels.end())
      raise<DataError>(where, "column 'Finding Label': unknown finding '", t.cell(rec, c_label),
                       "' (known: ", join(kCxr14Labels), ", Infiltrate)");
    double v[4];
    const char* names[4] = {"Bbox [x", "y", "w", "h]"};
    for (size_t k = 0; k < 4; ++k) {
      if (c_x + k >= t.names.size())
        raise<DataError>(at(csv, t.records[0].line), "the header has no '", names[k], "' column");
      const std::string s = t.cell(rec, c_x + k);
      if (!parse_double(s, &v[k]))
        raise<DataError>(where, "column '", names[k], "': bad value '", s, "' (want a number)");
    }
    if (!(v[2] > 0 && v[3] > 0))
      raise<DataError>(where, "box width and height must be > 0, got '", t.cell(rec, c_x + 2),
                       "' x '", t.cell(rec, c_x + 3), "'");
    const auto [it, fresh] = item_of.emplace(image, items.size());
    if (fresh) items.push_back({image, rec.line, true, {}});
    items[it->second].boxes.push_back({label, v[0], v[1], v[2], v[3]});
  }

  ManifestWriter w(o.out, {}, true, false, true);
  int64_t skipped = 0;
  for (const BoxItem& item : items) {
    const std::string* path = images.find(item.id);
    if (!path) {
      skip_missing_image(o, images, at(csv, item.line), str_cat("image '", item.id, "' not found"),
                         &skipped);
      continue;
    }
    auto [patient, view] = entries.patient_view(item.id);
    w.add({*path, "test", std::move(patient), std::move(view), {}, "", boxes_text(item.boxes)});
  }
  return w.write(skipped, 0);
}

}  // namespace evax
