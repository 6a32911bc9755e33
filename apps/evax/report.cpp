// evax report: report.html of a run directory (and every run nested in it), e.g. for a run that
// is still going or one written before reports existed.
#include <iostream>

#include "commands.h"
#include "evax/report/report.h"

namespace evax::app {

int cmd_report(const Args& args) {
  std::string dir, out;
  ReportOptions o;
  int64_t max_points = static_cast<int64_t>(o.max_plot_points), gallery = o.max_gallery;
  ArgParser p("report",
              "Write RUN_DIR/report.html: one self-contained page (no network, no scripts) with\n"
              "the run's status, metrics of every evaluation, ROC curves, overlays and Grad-CAM\n"
              "galleries, loss / lr / throughput / evaluation curves, checkpoints (best marked),\n"
              "the resolved config with each value's origin and the environment; runs nested in\n"
              "it (the demo's stages) get their sections too. Prints the file's path.");
  p.positional("RUN_DIR", &dir, "run directory").required();
  p.option("--out", &out, "FILE", "where to write (default: RUN_DIR/report.html)");
  p.option("--max-points", &max_points, "N", "points per curve (min/max buckets; default 600)");
  p.option("--max-gallery", &gallery, "N", "images per gallery (default 12)");
  if (!p.parse(args)) return 0;
  if (max_points < 4) raise<UsageError>("--max-points ", max_points, ": must be >= 4");
  if (gallery < 0) raise<UsageError>("--max-gallery ", gallery, ": must be >= 0");
  o.max_plot_points = static_cast<size_t>(max_points);
  o.max_gallery = static_cast<int>(gallery);
  o.generator = evax_version_text();
  std::cout << report_write(dir, out, o) << "\n";
  return 0;
}

}  // namespace evax::app
