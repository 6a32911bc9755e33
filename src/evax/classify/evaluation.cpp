#include "evax/classify/evaluation.h"

#include "evax/core/log.h"
#include "evax/eval/report_files.h"

namespace evax {

nlohmann::ordered_json classify_evaluate_split(ClassifyTask& task, const std::string& split,
                                               const std::string& out_dir, bool write) {
  EvaluationFilesOptions o;
  o.task = task.spec().multiclass ? MetricsTask::kMulticlass : MetricsTask::kMultilabel;
  o.split = split;
  if (o.task == MetricsTask::kMultilabel && task.rows_in("val") > 0) {
    if (split == "val")
      log_warn("the Youden thresholds are chosen on the split being evaluated (val): its rates at "
               "them are optimistic");
    o.val_thresholds = per_class_youden(task.predict_split("val"));
  }
  ScoredLabels d = task.predict_split(split);
  nlohmann::ordered_json m;
  if (write) {
    m = write_evaluation_files(out_dir, d, o);
    log_info(split, " split (", d.rows(), " images):\n", evaluation_table(m));
    log_info("evaluation files: ", out_dir);
  }
  return m;
}

}  // namespace evax
