// `evax compare`: the headline test metric of several runs next to the paper's number for each
// (the `paper:` section of its config) and the difference, each run's state, and the config keys
// whose values differ between the runs; as Markdown and as a self-contained HTML page.
#pragma once

#include <string>
#include <vector>

#include "evax/report/run_dir.h"

namespace evax {

/// The number a paper-reproduction config carries (`paper:` section): which table, which metric
/// (a key of the test metrics.json, '/' for nested keys), the value as the paper prints it (in
/// percent of the metrics.json fraction) and where it comes from.
struct PaperNumber {
  bool present = false;
  std::string table, metric, source;
  double value = 0;
};

/// One run, summed up for the comparison.
struct RunSummary {
  std::string dir;
  RunStatus status;
  Headline headline;  ///< the paper's metric when the config has one, else the task's default
  PaperNumber paper;
  /// config.yaml flattened: dotted key → value as YAML flow text.
  std::vector<std::pair<std::string, std::string>> config;
};

/// Reads `dir` (config.yaml, status, test metrics). DataError when it is not a directory.
RunSummary run_summary(const std::string& dir);

/// The run directories the arguments name: each is a directory, or a glob pattern (*, ?, [..])
/// expanded here (a quoted pattern reaches the program unexpanded) to its matching directories
/// that hold a config.yaml or metrics.csv, sorted. UsageError for a path that does not exist or a
/// pattern that matches no run; duplicates are dropped.
std::vector<std::string> expand_run_args(const std::vector<std::string>& args);

/// The comparison as text.
struct CompareTables {
  std::string markdown;
  std::string html;
};

/// Headline metrics (percent, 2 decimals), the paper's value and the difference (run − paper,
/// points), each run's state ("in progress" marked), then the config keys that differ.
CompareTables compare_runs(const std::vector<RunSummary>& runs);

}  // namespace evax
