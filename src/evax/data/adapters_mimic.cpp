// MIMIC-CXR-JPG for pretraining: metadata + official split, frontal views only.
#include <string>
#include <unordered_map>

#include "evax/data/adapters_internal.h"

namespace evax {

using namespace adapters_detail;

ManifestSummary build_mimic_manifest(const AdapterOptions& o) {
  const fs::path root = require_root(o.root, "mimic");
  const std::string meta_csv = require_file(root, {"mimic-cxr-2.0.0-metadata.csv"}, 1, "mimic");
  const std::string split_csv = require_file(root, {"mimic-cxr-2.0.0-split.csv"}, 1, "mimic");
  const fs::path base = fs::path(meta_csv).parent_path();

  std::unordered_map<std::string, std::string> split_of;
  {
    const CsvTable t = read_csv_table(split_csv);
    const size_t c_id = t.col("dicom_id"), c_split = t.col("split");
    for (size_t r = 1; r < t.records.size(); ++r) {
      const CsvRecord& rec = t.records[r];
      const std::string s = t.cell(rec, c_split);
      const std::string split = s == "validate" ? "val" : s;
      if (split != "train" && split != "val" && split != "test")
        raise<DataError>(at(split_csv, rec.line), "column 'split': bad value '", s,
                         "' (want train, validate or test)");
      split_of[t.cell(rec, c_id)] = split;
    }
  }
  const CsvTable t = read_csv_table(meta_csv);
  const size_t c_id = t.col("dicom_id"), c_subject = t.col("subject_id");
  const size_t c_study = t.col("study_id"), c_view = t.col("ViewPosition");
  ManifestWriter w(o.out, {}, true, false, false);
  int64_t skipped = 0;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string where = at(meta_csv, rec.line);
    const std::string view = upper(t.cell(rec, c_view));
    if (view != "PA" && view != "AP") {
      ++skipped;
      continue;
    }
    const std::string id = t.cell(rec, c_id), subject = t.cell(rec, c_subject);
    const std::string study = t.cell(rec, c_study);
    if (id.empty()) raise<DataError>(where, "empty 'dicom_id'");
    if (!all_digits(subject) || subject.size() < 2)
      raise<DataError>(where, "column 'subject_id': bad value '", subject, "' (want digits)");
    if (!all_digits(study))
      raise<DataError>(where, "column 'study_id': bad value '", study, "' (want digits)");
    const auto s = split_of.find(id);
    if (s == split_of.end())
      raise<DataError>(where, "dicom_id '", id, "' is not in ", split_csv);
    const fs::path image = base / "files" / ("p" + subject.substr(0, 2)) / ("p" + subject) /
                           ("s" + study) / (id + ".jpg");
    if (!image_present(image.string(), o, where)) {
      ++skipped;
      continue;
    }
    w.add({image.string(), s->second, subject, view, {}, "", ""});
  }
  return w.write(skipped, 0);
}

}  // namespace evax
