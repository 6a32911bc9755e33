#include "evax/data/manifest.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <unordered_map>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/core/strings.h"

namespace evax {

namespace {

namespace fs = std::filesystem;

const char* const kSplits[] = {"train", "val", "test"};

bool is_split(const std::string& s) {
  for (const char* k : kSplits)
    if (s == k) return true;
  return false;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

std::string resolve(const fs::path& dir, const std::string& p) {
  const fs::path path(p);
  if (path.is_absolute()) return p;
  return (dir / path).lexically_normal().string();
}

// A strict float parse of the whole string; false when anything is left over or not finite.
bool parse_float(const std::string& s, float* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const float v = std::strtof(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

// Context for error messages: "manifest FILE:LINE: column N 'name': ".
struct Where {
  const std::string& file;
  int64_t line;
  std::string at(size_t col, const std::string& name) const {
    return str_cat("manifest ", file, ":", line, ": column ", col + 1, " '", name, "': ");
  }
  std::string at() const { return str_cat("manifest ", file, ":", line, ": "); }
};

// Label cell → value. The accepted spellings are deliberately few: anything else is a dataset
// conversion bug that must not turn silently into a 0 or a 1.
float parse_label(const std::string& raw, bool allow_uncertain, const Where& w, size_t col,
                  const std::string& name) {
  const std::string v = trim(raw);
  if (v.empty()) return std::numeric_limits<float>::quiet_NaN();
  if (v == "1" || v == "1.0") return 1.0f;
  if (v == "0" || v == "0.0") return 0.0f;
  if (v == "-1" || v == "-1.0") {
    if (allow_uncertain) return -1.0f;
    raise<DataError>(w.at(col, name), "uncertain label '", v,
                     "' (map uncertain labels first, or allow them with allow_uncertain)");
  }
  raise<DataError>(w.at(col, name), "bad label value '", v, "' (want 1, 0 or empty)");
}

std::vector<Box> parse_boxes(const std::string& cell, const Where& w, size_t col) {
  std::vector<Box> boxes;
  for (const std::string& raw : split_on(cell, ';')) {
    const std::string item = trim(raw);
    if (item.empty()) continue;  // tolerate a trailing ';'
    const auto bad = [&](const char* why) {
      raise<DataError>(w.at(col, "boxes"), "malformed box '", item, "': ", why,
                       " (want label:x,y,w,h)");
    };
    const size_t colon = item.rfind(':');
    if (colon == std::string::npos) bad("no ':'");
    Box b;
    b.label = trim(item.substr(0, colon));
    if (b.label.empty()) bad("empty label");
    const std::vector<std::string> nums = split_on(item.substr(colon + 1), ',');
    if (nums.size() != 4) bad("not 4 numbers");
    float v[4];
    for (int i = 0; i < 4; ++i)
      if (!parse_float(trim(nums[i]), &v[i])) bad("not a finite number");
    b.x = v[0], b.y = v[1], b.w = v[2], b.h = v[3];
    if (!(b.w > 0 && b.h > 0)) bad("width and height must be > 0");
    boxes.push_back(std::move(b));
  }
  return boxes;
}

}  // namespace


Manifest manifest_load(const std::string& csv, const ManifestOptions& options) {
  const std::vector<CsvRecord> records = csv_parse(read_file(csv), csv);
  if (records.empty()) raise<DataError>("manifest ", csv, ": empty file (no header row)");

  Manifest m;
  m.file = csv;
  const CsvRecord& header = records[0];
  const Where hw{csv, header.line};
  std::map<std::string, size_t> column;
  std::vector<std::string> names;
  for (size_t c = 0; c < header.fields.size(); ++c) {
    const std::string name = trim(header.fields[c]);
    if (name.empty()) raise<DataError>(hw.at(), "column ", c + 1, " has an empty name");
    const auto [it, fresh] = column.emplace(name, c);
    if (!fresh)
      raise<DataError>(hw.at(c, name), "duplicate column (also column ", it->second + 1, ")");
    names.push_back(name);
  }
  for (const char* req : {"path", "split", "patient_id"})
    if (!column.count(req)) {
      std::string have;
      for (const auto& nm : names) have += (have.empty() ? "" : ", ") + nm;
      raise<DataError>(hw.at(), "missing required column '", req, "' (columns: ", have, ")");
    }
  const auto col_of = [&](const char* name) -> int64_t {
    const auto it = column.find(name);
    return it == column.end() ? -1 : static_cast<int64_t>(it->second);
  };
  const int64_t c_path = col_of("path"), c_split = col_of("split"), c_pid = col_of("patient_id");
  const int64_t c_view = col_of("view"), c_mask = col_of("mask"), c_boxes = col_of("boxes");
  std::vector<size_t> label_cols;
  for (size_t c = 0; c < names.size(); ++c) {
    const std::string& nm = names[c];
    if (nm == "path" || nm == "split" || nm == "patient_id" || nm == "view" || nm == "mask" ||
        nm == "boxes")
      continue;
    label_cols.push_back(c);
    m.label_names.push_back(nm);
  }

  const fs::path dir = fs::path(csv).parent_path();
  std::unordered_map<std::string, std::pair<std::string, int64_t>> patient_split;
  m.rows.reserve(records.size() - 1);
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    const Where w{csv, rec.line};
    if (rec.fields.size() != names.size())
      raise<DataError>(w.at(), rec.fields.size(), " fields but the header has ", names.size());
    const auto cell = [&](int64_t c) { return trim(rec.fields[static_cast<size_t>(c)]); };
    ManifestRow row;
    row.line = rec.line;
    const std::string path = cell(c_path);
    if (path.empty()) raise<DataError>(w.at(c_path, "path"), "empty path");
    row.path = resolve(dir, path);
    row.split = cell(c_split);
    if (!is_split(row.split))
      raise<DataError>(w.at(c_split, "split"), "unknown split '", row.split,
                       "' (want train, val or test)");
    row.patient_id = cell(c_pid);
    if (row.patient_id.empty()) raise<DataError>(w.at(c_pid, "patient_id"), "empty patient_id");
    if (c_view >= 0) row.view = cell(c_view);
    if (c_mask >= 0) {
      const std::string mask = cell(c_mask);
      if (!mask.empty()) row.mask = resolve(dir, mask);
    }
    if (c_boxes >= 0) row.boxes = parse_boxes(rec.fields[c_boxes], w, c_boxes);
    row.labels.reserve(label_cols.size());
    for (size_t c : label_cols)
      row.labels.push_back(parse_label(rec.fields[c], options.allow_uncertain, w, c, names[c]));
    if (options.check_patient_splits) {
      const auto [it, fresh] = patient_split.emplace(row.patient_id,
                                                     std::make_pair(row.split, rec.line));
      if (!fresh && it->second.first != row.split)
        raise<DataError>(w.at(c_pid, "patient_id"), "patient '", row.patient_id, "' is in split '",
                         row.split, "' here but in '", it->second.first, "' on line ",
                         it->second.second, " (splits must be by patient)");
    }
    m.rows.push_back(std::move(row));
  }
  return m;
}

Manifest Manifest::select_split(const std::string& split) const {
  if (!is_split(split))
    raise<ConfigError>("unknown split '", split, "' (want train, val or test)");
  Manifest out;
  out.file = file;
  out.label_names = label_names;
  for (const ManifestRow& r : rows)
    if (r.split == split) out.rows.push_back(r);
  return out;
}

int64_t Manifest::label_index(const std::string& name) const {
  for (size_t i = 0; i < label_names.size(); ++i)
    if (label_names[i] == name) return static_cast<int64_t>(i);
  std::string have;
  for (const auto& nm : label_names) have += (have.empty() ? "" : ", ") + nm;
  raise<DataError>("manifest ", file, ": no label column '", name, "' (labels: ",
                   have.empty() ? "none" : have, ")");
}

Manifest Manifest::select_labels(const std::vector<std::string>& names) const {
  std::vector<int64_t> idx;
  for (const auto& nm : names) idx.push_back(label_index(nm));
  Manifest out;
  out.file = file;
  out.label_names = names;
  out.rows = rows;
  for (ManifestRow& r : out.rows) {
    std::vector<float> labels;
    for (int64_t i : idx) labels.push_back(r.labels[static_cast<size_t>(i)]);
    r.labels = std::move(labels);
  }
  return out;
}

}  // namespace evax
