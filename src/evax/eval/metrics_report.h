// The files of `evax metrics`: prediction and target CSVs in, a JSON report of every metric out.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "evax/eval/metrics.h"

namespace evax {

/// Which metric set a report holds.
enum class MetricsTask { kMultilabel, kMulticlass };

/// Parses "multilabel" / "multiclass" (UsageError naming the valid values otherwise).
MetricsTask metrics_task_from_string(const std::string& s);

/// Reads a prediction CSV and a target CSV (header `id,<class>,...`, same class columns in the
/// same order; targets 0/1, empty = missing) and matches their rows by id, in prediction order.
/// DataError naming file:line for a bad cell, the id of an unmatched row, or the differing columns.
ScoredLabels read_prediction_csvs(const std::string& pred_csv, const std::string& target_csv);

/// Every metric of `task` as the JSON `evax metrics` writes: "auc" (class → value or null),
/// "mauc", "warnings", and per task either the rates at `threshold` ("sensitivity",
/// "specificity", "ppv", "f1", "counts") or "accuracy", "per_class_recall", "per_class_ppv" and
/// "confusion" (rows = true class).
nlohmann::ordered_json metrics_report(const ScoredLabels& d, MetricsTask task,
                                      double threshold = 0.5);

}  // namespace evax
