// The files `evax evaluate` writes: metrics.json, the per-class table, the prediction and target
// CSVs `evax metrics` reads back, and ROC curve PNGs. Plain C++ on host vectors (no torch).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evax/core/csv.h"
#include "evax/eval/metrics.h"
#include "evax/eval/metrics_report.h"

namespace evax {

/// What write_evaluation_files writes besides the scores themselves.
struct EvaluationFilesOptions {
  MetricsTask task = MetricsTask::kMultilabel;
  std::string split = "test";  ///< recorded in metrics.json
  /// Per-class thresholds chosen on the validation split (Youden); empty = not available.
  std::vector<std::optional<double>> val_thresholds;
  bool roc_png = true;  ///< write roc/<index>_<class>.png and roc/all.png
};

/// Writes into `dir` (created): metrics.json, per_class.csv, predictions.csv, targets.csv and,
/// when asked, roc/*.png. metrics.json is metrics_report(d, task, 0.5) plus "split",
/// "positives" (multilabel), "at_youden" (multilabel with val thresholds; an infinite threshold
/// is the string "inf") and "notes". Returns metrics.json's content. DataError naming the path
/// when something cannot be created or written, or naming the sample for a non-finite score.
nlohmann::ordered_json write_evaluation_files(const std::string& dir, const ScoredLabels& d,
                                              const EvaluationFilesOptions& o);

/// The per-class table of a metrics.json as printed text (fixed-width columns, one row per
/// class, then a mean row over the classes with a value; "-" for null).
std::string evaluation_table(const nlohmann::ordered_json& metrics);

/// The shortest decimal text that reads back (strtod) as exactly `v`; "inf", "-inf" or "nan"
/// for the non-finite values.
std::string format_double_exact(double v);

}  // namespace evax
