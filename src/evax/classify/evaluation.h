// Scoring a finetuned classifier on a split and writing what `evax evaluate` (and the end of
// `evax finetune`) reports: metrics.json, per-class table, predictions, ROC curves.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "evax/classify/task.h"

namespace evax {

/// Predicts `split` with the task's current weights (collective over ranks). Multi-label: the
/// per-class Youden thresholds are chosen on the val split when it has rows (its metrics also
/// report the rates there). On rank 0 (`write`) writes the evaluation files into `out_dir`
/// (eval/report_files.h) and logs the per-class table. Returns metrics.json's content on rank
/// 0 (an empty object where `write` is false).
nlohmann::ordered_json classify_evaluate_split(ClassifyTask& task, const std::string& split,
                                               const std::string& out_dir, bool write);

}  // namespace evax
