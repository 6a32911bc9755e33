// What a run directory holds, read back for reports and comparisons: its status, metrics.csv,
// checkpoints, evaluations, sub-runs and the headline test metric. Plain files, no torch.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace evax {

/// Where a run stands.
struct RunStatus {
  /// "finished", "in progress", "stopped" (the process ended without finishing: an error, a
  /// preemption, a kill) or "unknown" (nothing says).
  std::string state = "unknown";
  std::string detail;  ///< why, in words ("" when plain)
};

/// Records the run's state in `<dir>/status.json` (atomically): "running" with this process's id
/// and host, "finished", or "stopped" with `message` (the error). Keeps the start time.
void run_status_write(const std::string& dir, const std::string& state,
                      const std::string& message = "");

/// The run's state: from status.json ("running" whose process is gone from this host reads as
/// "stopped"); without one, from the newest checkpoint (its step against the schedule's total).
RunStatus run_status(const std::string& dir);

/// metrics.csv: "step" then one column per metric; empty cells are NaN.
struct MetricsTable {
  std::vector<std::string> columns;        ///< without "step"
  std::vector<double> steps;
  std::vector<std::vector<double>> values;  ///< values[c][row]
  /// The column named `name`, or nullptr.
  const std::vector<double>* column(const std::string& name) const;
};

/// Reads a metrics.csv (a torn last line is skipped). Empty table when the file is missing.
MetricsTable metrics_csv_read(const std::string& path);

/// One checkpoint directory under checkpoints/.
struct CheckpointInfo {
  std::string name;        ///< "step-00000346" or "best"
  int64_t step = -1;
  int64_t epoch = -1;
  int64_t total_steps = -1;  ///< of the schedule (meta.json run.total_steps)
  std::string why;         ///< meta.json "why" (e.g. "epoch", "best", "end")
  std::string metric;      ///< the selection metric named in meta.json ("" when none)
  double value = 0;        ///< its value (NaN when absent)
  bool best = false;       ///< the best/ checkpoint, or the step it copies
};

/// The checkpoints of `run_dir`, step-N in step order then best/ (unreadable meta.json: step -1).
std::vector<CheckpointInfo> checkpoints_list(const std::string& run_dir);

/// Runs nested in `dir` (the demo's teacher/, finetune/, finetune/cam/, segment/): directories
/// below it, at any depth, holding config.yaml, metrics.csv or metrics.json (not eval/,
/// checkpoints/, tensorboard/, data/ themselves), in the order they were last written.
std::vector<std::string> sub_runs(const std::string& dir);

/// A run's headline test number.
struct Headline {
  std::string file;    ///< the metrics.json it comes from ("" when none)
  std::string metric;  ///< key, or a '/'-separated path inside metrics.json
  double value = 0;    ///< NaN when not available
};

/// The metric that sums up `metrics` (a metrics.json): `preferred` when given and present, else
/// by task: multilabel mauc, multiclass accuracy, segmentation mDice, Grad-CAM overall/map.
/// "" when none applies.
std::string headline_key(const nlohmann::json& metrics, const std::string& preferred = "");

/// The value at a '/'-separated path of `j` (object keys, array indices); NaN when absent or not
/// a number.
double json_number_at(const nlohmann::json& j, const std::string& path);

/// The headline of a run: eval/<eval.test_split of its config.yaml, default test>/metrics.json,
/// else a Grad-CAM metrics.json in the run directory itself; `preferred` as in headline_key.
Headline run_headline(const std::string& run_dir, const std::string& preferred = "");

}  // namespace evax
