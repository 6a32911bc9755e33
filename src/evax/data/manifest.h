// CSV manifests (format: data_manifests/README.md): one row per image with its split, patient,
// optional view, label columns, segmentation mask and boxes. Loading validates everything up front
// so that a bad manifest fails before training starts, with file:line and column in the message.
//
// Example:
//   Manifest m = manifest_load("synth/classification.csv");
//   Manifest train = m.select_split("train");
//   for (const ManifestRow& r : train.rows) use(r.path, r.labels);  // NaN = missing label
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "evax/core/csv.h"

namespace evax {

/// One bounding box of a row's `boxes` column, in pixels of the image at its stored size.
struct Box {
  std::string label;  ///< finding name (any text without ';')
  float x = 0, y = 0;  ///< top-left corner
  float w = 0, h = 0;  ///< size, > 0
};

/// One image of a manifest.
struct ManifestRow {
  std::string path;        ///< image file: absolute, or resolved against the manifest's folder
  std::string split;       ///< "train", "val" or "test"
  std::string patient_id;  ///< never empty
  std::string view;        ///< "PA", "AP", "LATERAL", ... or "" when unknown / no column
  /// One value per Manifest::label_names: 1, 0, NaN (missing) or -1 (uncertain, only when
  /// ManifestOptions::allow_uncertain).
  std::vector<float> labels;
  std::string mask;        ///< resolved mask path, "" when none
  std::vector<Box> boxes;  ///< empty when none
  int64_t line = 0;        ///< 1-based line of the manifest where the row starts
};

/// How manifest_load validates a file.
struct ManifestOptions {
  /// Let "-1" / "-1.0" label values (CheXpert "uncertain") through as -1 instead of a DataError.
  bool allow_uncertain = false;
  /// Raise a DataError when one patient_id appears in two splits (the README's rule).
  bool check_patient_splits = true;
};

/// A loaded manifest.
struct Manifest {
  std::string file;                      ///< the CSV it was read from
  std::vector<std::string> label_names;  ///< label columns, in file order
  std::vector<ManifestRow> rows;         ///< data rows, in file order

  /// The rows of one split ("train", "val" or "test"; ConfigError for any other name).
  Manifest select_split(const std::string& split) const;
  /// Index of a label column; DataError naming the file and the known labels when absent.
  int64_t label_index(const std::string& name) const;
  /// Keeps only the named label columns, in the given order (DataError for an unknown name).
  Manifest select_labels(const std::vector<std::string>& names) const;
  /// Number of rows.
  int64_t size() const { return static_cast<int64_t>(rows.size()); }
};

/// Reads and validates a manifest. Throws DataError naming file:line and the column for a missing
/// required column, a duplicate or empty column name, a bad label value (only 1, 0, 1.0, 0.0 or
/// empty; -1 with allow_uncertain), a malformed box, an unknown split, an empty path or
/// patient_id, a row with the wrong number of fields or an unterminated quote.
Manifest manifest_load(const std::string& csv, const ManifestOptions& options = {});


}  // namespace evax
