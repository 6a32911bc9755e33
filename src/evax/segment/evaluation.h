// What `evax segment` (after training) and `evax evaluate` write for a segmentation split.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "evax/segment/task.h"

namespace evax {

/// Scores `split` with the task's current weights (collective over ranks) and, when `write`
/// (rank 0), writes into `dir`: metrics.json (SegMetricsResult::to_json() plus "split",
/// "threshold", "inference"), per_class.csv (class, iou, dice, acc and the pixel areas) and
/// per_image.csv (path, then the Dice of each foreground class; empty where undefined) and
/// overlays/ (the options' `overlays` images, half the worst and half the best by mean Dice, the
/// prediction tinted with the label outlined in red; index.csv names them). Prints the per-class
/// table. Returns metrics.json's content.
nlohmann::ordered_json segment_evaluate_split(SegmentTask& task, const std::string& split,
                                              const std::string& dir, bool write);

/// The per-class table of a segmentation metrics.json as printed text ("-" for null), then the
/// means with and without the background.
std::string segment_metrics_table(const nlohmann::ordered_json& metrics);

}  // namespace evax
