// evax metrics: classification metrics of a prediction CSV against a target CSV, as JSON.
#include <cmath>

#include "commands.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/eval/metrics_report.h"

namespace evax::app {

int cmd_metrics(const Args& args) {
  std::string task, pred, target, out;
  double threshold = 0.5;
  ArgParser p(
      "metrics",
      "Classification metrics equal to scikit-learn's, from CSVs with a header `id,<class>,"
      "...`\n(same class columns, same order; rows matched by id). Targets are 0/1, one-hot "
      "for\nmulticlass; an empty target cell is a missing label, skipped for that class "
      "only.\nA class whose known labels are all 0 or all 1 gets AUC null and a warning, "
      "and is\nleft out of mAUC.");
  p.option("--task", &task, "multilabel|multiclass", "which metrics to compute").required();
  p.option("--pred", &pred, "P.csv", "predicted scores (probabilities or logits)").required();
  p.option("--target", &target, "T.csv", "targets: 0, 1 or empty").required();
  p.option("--out", &out, "M.json", "metrics JSON to write").required();
  p.option("--threshold", &threshold, "X",
           "multilabel: score >= X counts as positive for sensitivity/specificity/PPV/F1");
  if (!p.parse(args)) return 0;
  const MetricsTask t = metrics_task_from_string(task);
  if (!std::isfinite(threshold)) raise<UsageError>("--threshold must be finite");

  const ScoredLabels d = read_prediction_csvs(pred, target);
  const auto report = metrics_report(d, t, threshold);
  for (const auto& w : report["warnings"]) log_warn(w.get<std::string>());
  write_file_atomic(out, report.dump(2) + "\n");
  const auto& mauc = report["mauc"];
  log_info("wrote ", out, ": ", d.rows(), " samples, ", d.cols(), " classes, mAUC ",
           mauc.is_null() ? std::string("null") : mauc.dump(),
           t == MetricsTask::kMulticlass ? ", accuracy " + report["accuracy"].dump() : "");
  return 0;
}

}  // namespace evax::app
